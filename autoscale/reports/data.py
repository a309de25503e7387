"""Report data: pure functions from a run folder to frames and dicts, with no plotly in sight.

Optuna's habit: each plot has a data function (here) and a figure function (`reports.figures`), so
what a figure shows is testable on a small hand-made frame. Input names are those of
docs/run-folder.md; a half-written or older run folder (missing columns, no trials, a null best)
still loads, because a report is what people open when a run went wrong.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from autoscale.budget import within
from autoscale.engine.numerics import NUMERICS_FILE
from autoscale.errors import UserError
from autoscale.failures import FailureKind, failure_kind_of
from autoscale.point import INTEGER_FIELDS, Point
from autoscale.results import COLUMNS, KNOB_COLUMNS, METRIC_COLUMNS, PREDICTED

FAILURE_KINDS = tuple(kind.value for kind in FailureKind)
NUMERIC_COLUMNS = ("number", *INTEGER_FIELDS, *METRIC_COLUMNS, "pred_peak_bytes", "pred_tokens_per_s")
MIN_TRIALS_FOR_IMPORTANCE = 4  # PED-ANOVA compares the top quantile with the rest: fewer says nothing


@dataclass(frozen=True)
class Run:
    """One run folder, loaded: the trials frame, summary.json and the best ds_config."""

    path: Path
    trials: pd.DataFrame
    summary: dict
    ds_config: dict | None

    @property
    def study_name(self) -> str:
        return str(self.summary.get("study_name") or self.path.name)

    @property
    def predicted(self) -> bool:
        """A plan (`tune --backend model`): every figure is the cost model's; nothing was run."""
        return bool(self.summary.get("predicted"))

    @property
    def usable_bytes(self) -> float | None:
        """The limit trials were held to; run folders older than the name have `memory_limit_bytes`."""
        limit = self.summary.get("usable_bytes_per_rank", self.summary.get("memory_limit_bytes"))
        return float(limit) if limit else None


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run folder at {run_dir}")
    csv = run_dir / "trials.csv"
    if not csv.is_file():
        raise UserError(f"{run_dir} has no trials.csv: is it a run folder written by `autoscale tune`?")
    summary = _read_json(run_dir / "summary.json") or {}
    if not isinstance(summary, dict):
        raise UserError(f"{run_dir / 'summary.json'} is not a JSON object")
    return Run(path=run_dir, trials=load_trials(csv), summary=summary, ds_config=_read_json(run_dir / "ds_config.json"))


MAX_LOSS_CURVES = 4  # the fastest finished trials drawn over the reference's losses


def gate_losses(run: Run) -> dict[str, list[float]]:
    """The numerics gate's first losses: the reference run's (first) and the fastest finished trials'
    (at most `MAX_LOSS_CURVES`, the fastest first), from their folders' numerics.json; empty when the
    study had no reference run or kept no trial's record."""
    reference = _read_json(run.path / "reference" / NUMERICS_FILE)
    if not isinstance(reference, dict) or not reference.get("losses"):
        return {}
    curves = {"reference (fp32, ZeRO-0)": list(reference["losses"])}
    numbered = finished(run.trials).dropna(subset=["number"])  # a trial's folder is named by its number
    fastest = numbered.sort_values("tokens_per_s", ascending=False).head(MAX_LOSS_CURVES)
    for _, row in fastest.iterrows():
        record = _read_json(run.path / "trials" / str(int(row["number"])) / NUMERICS_FILE)
        if isinstance(record, dict) and record.get("losses"):
            curves[f"trial {int(row['number'])}: {describe_row(row, short=True)}"] = list(record["losses"])
    return curves if len(curves) > 1 else {}


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None


def load_trials(csv: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(csv, dtype={"reason": str, "status": str})
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    return normalize_trials(frame)


def normalize_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """Every documented column present with a usable type, plus `failure` (see `failure_kind`)."""
    frame = frame.copy()
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.NA
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in (*(k for k in KNOB_COLUMNS if k not in INTEGER_FIELDS), "started_at", "finished_at"):
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    frame["reason"] = frame["reason"].fillna("").astype(str)
    frame["status"] = frame["status"].fillna("unknown").astype(str)
    frame["is_baseline"] = frame["is_baseline"].map(_truthy).astype(bool)
    predicted = frame["status"] == PREDICTED  # a plan's point: plotted at its predicted figures
    frame.loc[predicted, "tokens_per_s"] = frame.loc[predicted, "pred_tokens_per_s"]
    frame.loc[predicted, "peak_bytes"] = frame.loc[predicted, "pred_peak_bytes"]
    frame["failure"] = [failure_kind(status, reason) for status, reason in zip(frame["status"], frame["reason"])]
    return frame


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def failure_kind(status: str, reason: str) -> str:
    """The kind named by `reason`'s prefix (`oom: ...` -> oom); "" for an ok trial."""
    kind = failure_kind_of(reason)
    if kind is not None:
        return kind.value
    if status in ("ok", PREDICTED):
        return ""
    return "pruned" if status == "pruned" else "other"


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials that measured a throughput, or a plan's points predicted to run."""
    return frame[frame["status"].isin(("ok", PREDICTED)) & frame["tokens_per_s"].notna()]


def describe_row(row, *, short: bool = False) -> str:
    """A trial's knobs in plain words (`short`: in a dozen characters, for tables); rows the Point
    rejects (invalid trials) are listed raw."""
    try:
        point = Point.from_row(row)
        return point.short() if short else point.describe()
    except (UserError, TypeError, ValueError):
        return ", ".join(f"{k} {row[k]}" for k in KNOB_COLUMNS if pd.notna(row[k]))


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished trials no other beats on both throughput (higher) and peak memory (lower),
    ordered by peak memory."""
    done = finished(frame).dropna(subset=["peak_bytes"])
    ordered = done.sort_values(["peak_bytes", "tokens_per_s"], ascending=[True, False])
    keep, fastest = [], float("-inf")
    for index, tokens_per_s in ordered["tokens_per_s"].items():
        if tokens_per_s > fastest:
            keep.append(index)
            fastest = tokens_per_s
    return ordered.loc[keep]


def feasible(frame: pd.DataFrame, usable_bytes: float | None) -> pd.Series:
    """Finished and within the memory limit: what the tuner may call best."""
    ok = (frame["status"] == "ok") & frame["tokens_per_s"].notna()
    return ok & frame["peak_bytes"].map(lambda peak: within(None if pd.isna(peak) else peak, usable_bytes))


def elapsed_s(frame: pd.DataFrame) -> pd.Series:
    """Seconds from the run's first start to each trial's finish; summed wall_s when the
    timestamps are missing."""
    started = pd.to_datetime(frame["started_at"], utc=True, errors="coerce", format="ISO8601")
    finished_at = pd.to_datetime(frame["finished_at"], utc=True, errors="coerce", format="ISO8601")
    if finished_at.notna().any() and started.notna().any():
        return (finished_at - started.min()).dt.total_seconds()
    return frame["wall_s"].fillna(0).cumsum()


def best_so_far(frame: pd.DataFrame, usable_bytes: float | None = None, by: str = "number") -> pd.DataFrame:
    """The optimisation history: each trial's throughput (NaN unless feasible) and the best so far,
    against the trial number (`by="number"`) or the seconds since the run started (`by="wall"`)."""
    if by not in ("number", "wall"):
        raise ValueError(f"by must be 'number' or 'wall', got {by!r}")
    x = frame["number"] if by == "number" else elapsed_s(frame)
    history = pd.DataFrame({"x": x, "number": frame["number"], "status": frame["status"],
                            "tokens_per_s": frame["tokens_per_s"].where(feasible(frame, usable_bytes))})
    history = history.dropna(subset=["x"]).sort_values("x", kind="stable")
    history["best_tokens_per_s"] = history["tokens_per_s"].cummax()
    return history.reset_index(drop=True)


def failure_counts(frame: pd.DataFrame) -> dict[str, int]:
    kinds = frame.loc[frame["failure"] != "", "failure"]
    return {kind: int(count) for kind, count in kinds.value_counts().items()}


def predicted_vs_measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished trials with a cost-model prediction; empty when the model predicted nothing."""
    columns = ["number", "pred_tokens_per_s", "tokens_per_s", "pred_peak_bytes", "peak_bytes"]
    done = finished(frame)
    done = done[done["status"] == "ok"]  # measured: a plan's points have nothing to compare with
    has_prediction = done["pred_tokens_per_s"].notna() | done["pred_peak_bytes"].notna()
    return done.loc[has_prediction, columns].reset_index(drop=True)


@dataclass(frozen=True)
class Importances:
    """Optuna's parameter importances (summing to 1), or why there are none."""

    values: dict[str, float]
    note: str | None = None


def param_importances(run_dir: Path, study_name: str | None) -> Importances:
    """PED-ANOVA importances (Optuna's default evaluator, no scikit-learn) of the study in
    `run_dir/study.db`, over the knobs that took more than one value. Trials the tuner answered
    from an earlier measurement of the same point are left out, so a point does not count twice."""
    import optuna

    from autoscale.study import REPEAT_ATTR

    db = Path(run_dir) / "study.db"
    if not db.is_file():
        return Importances({}, "no study.db in the run folder (the study may live in another storage)")
    if not study_name:
        return Importances({}, "summary.json names no study")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}")
            complete = [t for t in stored.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                        if REPEAT_ATTR not in t.user_attrs and t.params]  # the baseline is queued without params
            if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
                return Importances({}, f"{len(complete)} distinct completed trials: importances need at least "
                                       f"{MIN_TRIALS_FOR_IMPORTANCE}")
            varied = sorted({name for t in complete for name in t.params
                             if len({repr(u.params[name]) for u in complete if name in u.params}) > 1})
            if not varied:
                return Importances({}, "no knob took more than one value")
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" in the console
            study = optuna.create_study(directions=stored.directions)
            study.add_trials(complete)
            values = optuna.importance.get_param_importances(study, params=varied)
    except Exception as error:  # a study from another Optuna version, a locked or foreign database
        return Importances({}, f"importances unavailable: {type(error).__name__}: {str(error)[:200]}")
    return Importances({name: float(value) for name, value in values.items()},
                       f"from {len(complete)} distinct completed trials")


def best_entry(run: Run) -> dict | None:
    """summary.json's best, or, when it is null or absent, the fastest feasible trial in the frame."""
    best = run.summary.get("best")
    if best and best.get("metrics"):
        return best
    candidates = run.trials[feasible(run.trials, run.usable_bytes) & ~run.trials["is_baseline"]]
    if candidates.empty:
        return None
    row = candidates.loc[candidates["tokens_per_s"].idxmax()]
    point = {k: (int(row[k]) if k in INTEGER_FIELDS else row[k]) for k in KNOB_COLUMNS if pd.notna(row[k])}
    metrics = {k: (None if pd.isna(row[k]) else float(row[k])) for k in NUMERIC_COLUMNS if k in row.index}
    return {"trial_number": None if pd.isna(row["number"]) else int(row["number"]), "point": point,
            "metrics": metrics}


def _point_words(point: dict | None) -> str:
    if not point:
        return ""
    try:
        return Point.from_dict(point).describe()
    except (UserError, TypeError):
        return ", ".join(f"{k} {v}" for k, v in point.items())


def _baseline_tokens_per_s(run: Run) -> float | None:
    baseline = run.summary.get("baseline") or {}
    value = (baseline.get("metrics") or {}).get("tokens_per_s")
    if value:
        return float(value)
    rows = finished(run.trials[run.trials["is_baseline"]])
    return float(rows["tokens_per_s"].iloc[0]) if not rows.empty else None


def headline(run: Run) -> dict | None:
    """The summary card: what to run, how fast, how close to the memory limit, how much faster than
    the baseline. None when no trial finished."""
    best = best_entry(run)
    if best is None:
        return None
    metrics = best.get("metrics") or {}
    tokens_per_s = metrics.get("tokens_per_s")
    peak_bytes = metrics.get("peak_bytes")
    limit = run.usable_bytes
    baseline_tokens_per_s = _baseline_tokens_per_s(run)
    speedup = run.summary.get("speedup")
    if speedup is None and baseline_tokens_per_s and tokens_per_s:
        speedup = tokens_per_s / baseline_tokens_per_s
    return {
        "trial_number": best.get("trial_number"),
        "description": _point_words(best.get("point")),
        "point": best.get("point") or {},
        "tokens_per_s": tokens_per_s,
        "tflops_per_device": metrics.get("tflops_per_device"),
        "mfu": metrics.get("mfu"),
        "peak_bytes": peak_bytes,
        "usable_bytes": limit,
        "memory_used_fraction": peak_bytes / limit if peak_bytes and limit else None,
        "headroom_bytes": limit - peak_bytes if peak_bytes is not None and limit else None,
        "speedup": speedup,
        "baseline_tokens_per_s": baseline_tokens_per_s,
        "baseline_description": _point_words((run.summary.get("baseline") or {}).get("point")),
    }


def findings(run: Run, importances: Importances) -> list[str]:
    """A few plain sentences on what the search learned, for readers who skip the figures."""
    frame = run.trials
    counts = frame["status"].value_counts()
    failures = failure_counts(frame)
    if run.predicted:
        lines = [f"{len(frame)} points PREDICTED by the cost model, none run: {int(counts.get(PREDICTED, 0))} "
                 f"predicted to fit, {int(counts.get('pruned', 0))} predicted not to fit."]
    else:
        lines = [f"{len(frame)} trials: {int(counts.get('ok', 0))} finished, {int(counts.get('failed', 0))} failed, "
                 f"{int(counts.get('pruned', 0))} pruned."]
    if failures:
        lines.append("Why trials did not finish: " + ", ".join(
            f"{count} {kind.upper() if kind in ('oom', 'nan') else kind}" for kind, count in failures.items()) + ".")
    if importances.values:
        ranked = sorted(importances.values.items(), key=lambda item: -item[1])
        lines.append("The knobs that mattered most: " + ", ".join(
            f"{name} ({share:.0%})" for name, share in ranked[:3]) + ".")
    front = pareto_front(frame)
    if len(front) > 1:
        lightest, fastest = front.iloc[0], front.iloc[-1]
        lines.append(f"{len(front)} configs trade speed for memory (the Pareto front): from "
                     f"{lightest['tokens_per_s']:,.0f} tokens/s at {lightest['peak_bytes'] / 2**30:.2f} GiB to "
                     f"{fastest['tokens_per_s']:,.0f} tokens/s at {fastest['peak_bytes'] / 2**30:.2f} GiB.")
    limit = run.usable_bytes
    if limit:
        over = int((frame["peak_bytes"] > limit).sum())
        if over:
            lines.append(f"{over} finished trials went over the memory limit and cannot be picked as best.")
    return lines


def best_interval(run: Run) -> tuple[float, float] | None:
    """The winner's confirmed tokens/s interval (`autoscale.confirm`), when the study confirmed it."""
    confirmation = (run.summary.get("best") or {}).get("confirmation") or {}
    contenders = confirmation.get("contenders") or []
    interval = contenders[0].get("tokens_per_s") if contenders else None
    return (interval["low"], interval["high"]) if interval else None


def comparison_caveat(runs: list[Run]) -> str | None:
    """Refuse two studies of different models (their tokens/s measure different work); one line of
    warning when hardware, world size or provenance (measured or predicted) differ, since the ratio
    of their best figures is then not a speed-up of one config over another."""
    models = [(run.summary.get("model") or {}).get("name") for run in runs]
    if models[0] != models[1]:
        raise UserError(f"cannot compare {runs[0].study_name} ({models[0]}) with {runs[1].study_name} ({models[1]}): "
                        "their tokens/s measure different models; compare two studies of one model")
    differences = []
    for what, value in (("hardware", lambda run: (run.summary.get("hardware") or {}).get("name")),
                        ("world size", lambda run: run.summary.get("world_size")),
                        ("provenance", lambda run: "predicted" if run.predicted else "measured")):
        a, b = value(runs[0]), value(runs[1])
        if a != b:
            differences.append(f"{what} {a} vs {b}")
    if not differences:
        return None
    return f"Careful: the studies differ in {', '.join(differences)}, so their ratio is not a like-for-like speed-up."


def load_difference(runs: list[Run]) -> str | None:
    """A warning when two studies ran under different host load (`autoscale.hostload`)."""
    busy = [((run.summary.get("host_load") or {}).get("busy_before")) for run in runs]
    if not any(busy) or all(busy):
        return None
    which = next(i for i, reason in enumerate(busy) if reason)
    return (f"Careful: {runs[which].study_name} ran on a busy host ({busy[which]}) and the other did not, so "
            "part of any difference is the load.")
