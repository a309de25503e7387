"""The HTML report: data functions and figures on small hand-made frames, the page on a synthetic run
folder (escaping, the empty study, the 1,000-trial size and build time), and the CLI commands."""

from __future__ import annotations

import json
import random
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from autoscale.cli import main
from autoscale.errors import UserError
from autoscale.results import COLUMNS
from autoscale.reports import build, data, figures

GIB = 2**30
LIMIT = 80 * GIB


def write_run(folder: Path, n_trials: int, *, study_name: str = "gpt-small-h100", seed: int = 0,
              predictions: bool = False, study: bool = False) -> Path:
    """A run folder shaped like `autoscale tune`'s: a baseline, n_trials searched trials with a
    plausible throughput/memory model, OOMs past the limit, a few timeouts, crashes, NaNs and
    prunes; optionally the Optuna study in study.db and cost-model predictions."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc)
    clock = start
    rows = []

    def measure(point: dict) -> tuple[float, float]:
        speed = {"fp32": 1.0, "bf16": 2.6, "fp16": 2.5}[point["precision"]]
        speed *= {"none": 1.0, "selective": 0.9, "full": 0.75}[point["checkpointing"]]
        speed *= {0: 1.0, 1: 0.98, 2: 0.95, 3: 0.8}[point["zero_stage"]] * (0.6 if point["offload"] == "cpu" else 1)
        speed *= {"torch": 1.0, "triton": 1.15, "compile": 1.1}[point["kernels"]]
        speed *= min(point["micro_batch"], 16) ** 0.35
        width = 2 if point["precision"] == "fp32" else 1
        states = 16e9 / {0: 1, 1: 3, 2: 5, 3: 8}[point["zero_stage"]] / (4 if point["offload"] == "cpu" else 1)
        activations = point["micro_batch"] * 3.2e9 * width * {"none": 1, "selective": 0.5, "full": 0.15}[
            point["checkpointing"]]
        return 21000 * speed * rng.uniform(0.95, 1.05), states + activations + 2e9

    for index in range(n_trials + 1):
        baseline = index == 0
        point = dict(zero_stage=0, micro_batch=1, grad_accum=32, precision="fp32", checkpointing="none",
                     offload="none", kernels="torch", tp=1, pp=1) if baseline else dict(
            zero_stage=rng.choice([0, 1, 2, 3]), micro_batch=rng.choice([1, 2, 4, 8, 16, 32]),
            precision=rng.choice(["fp32", "bf16", "fp16"]), checkpointing=rng.choice(["none", "selective", "full"]),
            offload="none", kernels=rng.choice(["torch", "triton", "compile"]), tp=1, pp=1)
        if not baseline:
            point["grad_accum"] = max(1, 32 // point["micro_batch"])
            if point["zero_stage"] and rng.random() < 0.2:
                point["offload"] = "cpu"
        tokens_per_s, peak_bytes = measure(point)
        status, reason = "ok", ""
        if peak_bytes > LIMIT:
            status, reason = "failed", f"oom: CUDA out of memory. Tried to allocate {peak_bytes / GIB:.1f} GiB"
        elif not baseline and rng.random() < 0.08:
            status, reason = rng.choice([("failed", "timeout: no step after 300 s"),
                                         ("failed", "crash: rank 3 exited with signal 11"),
                                         ("failed", "nan: loss became NaN at step 4"),
                                         ("pruned", "pruned: the cost model predicts 1.3x the memory limit")])
        wall_s = rng.uniform(40, 120) if status == "ok" else rng.uniform(10, 300)
        finished = clock + timedelta(seconds=wall_s)
        ok = status == "ok"
        rows.append({
            "number": None if baseline else index - 1, **point,
            "tokens_per_s": tokens_per_s if ok else None, "samples_per_s": tokens_per_s / 1024 if ok else None,
            "tflops_per_device": tokens_per_s * 6 * 124e6 / 8 / 1e12 if ok else None,
            "mfu": tokens_per_s * 6 * 124e6 / 8 / 989e12 if ok else None, "peak_bytes": peak_bytes if ok else None,
            "loss": rng.uniform(7, 9) if ok else None, "steps": 12 if ok else None,
            "step_s": 32768 / tokens_per_s if ok else None, "wall_s": wall_s, "launch_s": rng.uniform(5, 15) if ok else None,
            "status": status, "reason": reason, "is_baseline": baseline,
            "pred_peak_bytes": peak_bytes * rng.uniform(0.9, 1.1) if predictions else None,
            "pred_tokens_per_s": tokens_per_s * rng.uniform(0.8, 1.2) if predictions else None,
            "started_at": clock.isoformat(timespec="seconds"), "finished_at": finished.isoformat(timespec="seconds"),
        })
        clock = finished + timedelta(seconds=2)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.to_csv(folder / "trials.csv", index=False)
    ok = frame[(frame["status"] == "ok") & (frame["peak_bytes"] <= LIMIT)]
    searched, base = ok[~ok["is_baseline"]], ok[ok["is_baseline"]]

    def entry(row):
        point = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in
                 ("zero_stage", "micro_batch", "grad_accum", "precision", "checkpointing", "offload", "kernels",
                  "tp", "pp")}
        metrics = {k: row[k] for k in ("tokens_per_s", "tflops_per_device", "mfu", "peak_bytes", "step_s")}
        return {"trial_number": None if pd.isna(row["number"]) else int(row["number"]), "point": point,
                "metrics": metrics}

    best = entry(searched.loc[searched["tokens_per_s"].idxmax()]) if not searched.empty else None
    baseline_entry = entry(base.iloc[0]) if not base.empty else None
    summary = {
        "study_name": study_name, "model": {"name": "gpt-small", "params": 124_000_000,
                                            "train_flops_per_token": 6 * 124e6},
        "backend": "cuda", "world_size": 8, "global_batch": 256, "seq_len": 1024,
        "hardware": {"name": "h100-sxm", "description": "NVIDIA H100 SXM 80GB", "memory_bytes": LIMIT,
                     "peak_tflops": 989},
        "usable_bytes_per_rank": LIMIT, "best": best, "baseline": baseline_entry,
        "speedup": best["metrics"]["tokens_per_s"] / baseline_entry["metrics"]["tokens_per_s"]
        if best and baseline_entry else None,
        "counts": {s: int((frame["status"] == s).sum()) for s in ("ok", "failed", "pruned")},
        "versions": {"python": "3.11.9", "torch": "2.6.0", "deepspeed": "0.16.4", "optuna": "4.2.1",
                     "autoscale": "0.1.0"},
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "command": ["autoscale", "tune", "--model", "gpt-small", "--study-name", study_name],
        "storage": f"sqlite:///{folder}/study.db", "started_at": start.isoformat(), "finished_at": clock.isoformat(),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if best:
        (folder / "ds_config.json").write_text(json.dumps({
            "train_micro_batch_size_per_gpu": best["point"]["micro_batch"],
            "gradient_accumulation_steps": best["point"]["grad_accum"],
            "zero_optimization": {"stage": best["point"]["zero_stage"]},
            "bf16": {"enabled": best["point"]["precision"] == "bf16"}}, indent=2))
    if study:
        _write_study(folder / "study.db", study_name, frame[~frame["is_baseline"]])
    return folder


def _write_study(db: Path, study_name: str, frame: pd.DataFrame) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=f"sqlite:///{db}", direction="maximize")
    knobs = {"zero_stage": [0, 1, 2, 3], "micro_batch": [1, 2, 4, 8, 16, 32], "precision": ["fp32", "bf16", "fp16"],
             "checkpointing": ["none", "selective", "full"], "kernels": ["torch", "triton", "compile"]}
    distributions = {k: CategoricalDistribution(v) for k, v in knobs.items()}
    trials = []
    for _, row in frame.iterrows():
        params = {k: (int(row[k]) if k in ("zero_stage", "micro_batch") else row[k]) for k in knobs}
        ok = row["status"] == "ok"
        trials.append(optuna.trial.create_trial(
            params=params, distributions=distributions, value=float(row["tokens_per_s"]) if ok else None,
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL))
    study.add_trials(trials)


def small_frame() -> pd.DataFrame:
    """Five trials by hand: A (1 GiB, 100 tok/s) and B (2 GiB, 300) and D (4 GiB, 400) are on the
    front; C (3 GiB, 250) is beaten by B; E ran out of memory."""
    rows = [
        dict(number=0, zero_stage=0, micro_batch=1, grad_accum=8, precision="fp32", status="ok",
             tokens_per_s=100.0, peak_bytes=1 * GIB, started_at="2025-01-01T00:00:00+00:00",
             finished_at="2025-01-01T00:01:00+00:00"),
        dict(number=1, zero_stage=1, micro_batch=2, grad_accum=4, precision="bf16", status="ok",
             tokens_per_s=300.0, peak_bytes=2 * GIB, started_at="2025-01-01T00:01:00+00:00",
             finished_at="2025-01-01T00:02:00+00:00"),
        dict(number=2, zero_stage=2, micro_batch=2, grad_accum=4, precision="fp16", status="ok",
             tokens_per_s=250.0, peak_bytes=3 * GIB, started_at="2025-01-01T00:02:00+00:00",
             finished_at="2025-01-01T00:04:00+00:00"),
        dict(number=3, zero_stage=0, micro_batch=8, grad_accum=1, precision="fp32", status="failed",
             reason="oom: <b>CUDA</b> out of memory", started_at="2025-01-01T00:04:00+00:00",
             finished_at="2025-01-01T00:04:30+00:00"),
        dict(number=4, zero_stage=3, micro_batch=4, grad_accum=2, precision="bf16", status="ok",
             tokens_per_s=400.0, peak_bytes=4 * GIB, started_at="2025-01-01T00:04:30+00:00",
             finished_at="2025-01-01T00:06:00+00:00"),
    ]
    return data.normalize_trials(pd.DataFrame(rows))


# --- data --------------------------------------------------------------------------------------

def test_failure_kind_reads_the_reason_prefix():
    assert data.failure_kind("failed", "oom: CUDA out of memory") == "oom"
    assert data.failure_kind("failed", "NaN: loss") == "nan"
    assert data.failure_kind("pruned", "pruned: predicted over the limit") == "pruned"
    assert data.failure_kind("pruned", "") == "pruned"
    assert data.failure_kind("failed", "something odd") == "other"
    assert data.failure_kind("ok", "") == ""


def test_a_trial_that_failed_the_numerics_gate_is_filed_as_diverged_with_a_style_of_its_own():
    reason = "diverged: loss gap 3.10e-03 exceeds the fp32 band 1e-04 over the first 3 steps"
    assert data.failure_kind("failed", reason) == "diverged"
    assert figures.FAILURE_STYLE["diverged"] != figures.FAILURE_STYLE["other"]
    assert set(figures.FAILURE_STYLE) == {*data.FAILURE_KINDS, "other"}


def test_pareto_front_keeps_only_unbeaten_trials():
    front = data.pareto_front(small_frame())
    assert front["number"].tolist() == [0, 1, 4]


def test_best_so_far_is_monotonic_by_number_and_by_wall_time():
    frame = small_frame()
    by_number = data.best_so_far(frame, None, "number")
    assert by_number["best_tokens_per_s"].tolist()[:3] == [100.0, 300.0, 300.0]
    assert by_number["best_tokens_per_s"].iloc[-1] == 400.0
    by_wall = data.best_so_far(frame, None, "wall")
    assert by_wall["x"].tolist() == [60.0, 120.0, 240.0, 270.0, 360.0]


def test_best_so_far_ignores_trials_over_the_memory_limit():
    history = data.best_so_far(small_frame(), 3.5 * GIB, "number")
    assert history["best_tokens_per_s"].max() == 300.0


def test_missing_columns_are_tolerated():
    frame = data.normalize_trials(pd.DataFrame({"number": [0], "status": ["ok"], "tokens_per_s": [5.0]}))
    assert set(COLUMNS) <= set(frame.columns)
    assert data.pareto_front(frame).empty  # no peak_bytes: nothing to place
    assert data.predicted_vs_measured(frame).empty


def test_predicted_vs_measured_keeps_finished_trials_with_a_prediction():
    frame = small_frame()
    frame.loc[frame["number"] == 1, ["pred_tokens_per_s", "pred_peak_bytes"]] = [280.0, 2.2 * GIB]
    frame.loc[frame["number"] == 3, "pred_peak_bytes"] = 90 * GIB  # failed: not compared
    assert data.predicted_vs_measured(frame)["number"].tolist() == [1]


def test_importances_explain_why_they_are_missing(tmp_path):
    assert "no study.db" in data.param_importances(tmp_path, "s").note
    folder = write_run(tmp_path / "run", 2, study=True)
    result = data.param_importances(folder, "gpt-small-h100")
    assert result.values == {} and "at least" in result.note


def test_importances_come_from_the_optuna_study(tmp_path):
    folder = write_run(tmp_path / "run", 40, study=True)
    result = data.param_importances(folder, "gpt-small-h100")
    assert "distinct completed trials" in result.note
    assert set(result.values) == {"zero_stage", "micro_batch", "precision", "checkpointing", "kernels"}
    assert sum(result.values.values()) == pytest.approx(1.0)


def test_best_entry_falls_back_to_the_frame_when_summary_has_none(tmp_path):
    folder = write_run(tmp_path / "run", 12)
    summary = json.loads((folder / "summary.json").read_text())
    expected = summary["best"]["trial_number"]
    summary["best"] = None
    (folder / "summary.json").write_text(json.dumps(summary))
    assert data.best_entry(data.load_run(folder))["trial_number"] == expected


def test_report_reads_what_the_real_tuner_writes(tmp_path):
    """The tuner's own files (with a stand-in for the engine): columns, summary and study as they
    really are, repeated points and all."""
    from autoscale.engine.request import TrialResult
    from autoscale.models import PRESETS
    from autoscale.results import RunInfo
    from autoscale.space import load_space
    from autoscale.tuner import TuneConfig, tune

    def engine(request):
        point = request.point
        if point.micro_batch == 8 and point.zero_stage == 0:
            return TrialResult.failed("oom: out of memory", wall_s=2.0)
        tokens_per_s = 1000.0 * point.micro_batch ** 0.5 * (1.5 if point.precision == "bf16" else 1.0)
        return TrialResult(status="ok", tokens_per_s=tokens_per_s, samples_per_s=tokens_per_s / 128,
                           tflops_per_device=0.01, mfu=0.002, peak_bytes=int(2e8 / (1 + point.zero_stage)
                                                                              + point.micro_batch * 5e7),
                           loss=9.0, steps=5, step_s=0.5, wall_s=10.0, launch_s=3.0)

    spec, out = PRESETS["gpt-tiny"], tmp_path / "runs" / "tiny"
    config = TuneConfig(spec=spec, space=load_space("default"), global_batch=16, seq_len=128, backend="cpu",
                        nproc=2, trials=12, out_dir=out, study_name="tiny", usable_bytes_per_rank=2**30)
    info = RunInfo(study_name="tiny", model={"name": spec.name, "params": spec.param_count()}, backend="cpu",
                   world_size=2, global_batch=16, seq_len=128, hardware={"name": "cpu"}, device_bytes_per_rank=None, usable_bytes_per_rank=2**30,
                   command=["autoscale", "tune"], storage=config.storage_url, started_at="2025-01-01T00:00:00+00:00")
    tune(config, info=info, run=engine)
    html = build.build_report(out).read_text()
    run = data.load_run(out)
    card = data.headline(run)
    assert card["description"] in html and card["speedup"] > 1
    assert _plot_count(html) >= 3  # memory, history, parallel coordinates (+ importances with enough trials)
    importances = data.param_importances(out, "tiny")
    assert importances.values and not {"kernels", "tp", "pp"} & set(importances.values)  # one value each: left out


# --- figures ------------------------------------------------------------------------------------

def _traces(fig, name_start):
    return [t for t in fig.data if (t.name or "").startswith(name_start)]


def test_throughput_memory_figure_draws_front_limit_and_failures():
    frame = small_frame()
    fig = figures.throughput_memory_figure(frame, data.pareto_front(frame), 5 * GIB, best_number=4)
    front = _traces(fig, "Pareto")[0]
    assert list(front.y) == [100.0, 300.0, 400.0]
    assert sorted(t.name for t in fig.data if t.name.startswith("ZeRO")) == ["ZeRO-0", "ZeRO-1", "ZeRO-2", "ZeRO-3"]
    oom = _traces(fig, "OOM")[0]
    assert list(oom.x) == [5.0] and list(oom.y) == [0]  # placed at the limit it went over
    assert "&lt;b&gt;CUDA&lt;/b&gt;" in oom.text[0]  # the reason shows as text, not markup
    assert fig.layout.shapes[0].x0 == 5.0  # the memory limit line
    assert _traces(fig, "best")[0].y[0] == 400.0


def test_throughput_memory_figure_counts_failures_it_cannot_place():
    frame = small_frame()
    fig = figures.throughput_memory_figure(frame, data.pareto_front(frame), None)
    assert not _traces(fig, "OOM")
    assert any("1 OOM" in a.text for a in fig.layout.annotations)


def test_history_figure_has_trials_and_best_so_far_in_two_panels():
    frame = small_frame()
    fig = figures.history_figure(data.best_so_far(frame, None, "number"), data.best_so_far(frame, None, "wall"))
    assert [t.name for t in fig.data] == ["trial", "best so far", "trial", "best so far"]
    assert list(fig.data[1].y)[-1] == 400.0
    assert list(fig.data[3].x)[0] == 1.0  # one minute after the start


def test_importance_figure_puts_the_most_important_on_top():
    fig = figures.importance_figure({"micro_batch": 0.6, "precision": 0.3, "<i>kernels</i>": 0.1})
    assert list(fig.data[0].y) == ["&lt;i&gt;kernels&lt;/i&gt;", "precision", "micro_batch"]


def test_parallel_coordinates_shows_only_knobs_that_varied():
    fig = figures.parallel_coordinates_figure(small_frame())
    labels = [d.label for d in fig.data[0].dimensions]
    assert labels == ["zero_stage", "micro_batch", "grad_accum", "precision", "peak GiB", "tokens/s"]
    precision = fig.data[0].dimensions[3]
    assert list(precision.ticktext) == ["bf16", "fp16", "fp32"]


def test_prediction_figure_has_a_diagonal_per_panel():
    frame = small_frame()
    frame["pred_tokens_per_s"] = frame["tokens_per_s"] * 1.1
    frame["pred_peak_bytes"] = frame["peak_bytes"] * 0.9
    fig = figures.prediction_figure(data.predicted_vs_measured(frame))
    assert len(fig.data) == 4
    assert len(fig.data[0].x) == 4 and len(fig.data[2].x) == 4


def test_compare_figures_have_one_group_per_study():
    frame = small_frame()
    fig = figures.compare_throughput_memory_figure({"a": (frame, data.pareto_front(frame)),
                                                    "<b>b</b>": (frame, data.pareto_front(frame))})
    assert [t.name for t in fig.data] == ["a", "a: Pareto front", "&lt;b&gt;b&lt;/b&gt;",
                                          "&lt;b&gt;b&lt;/b&gt;: Pareto front"]
    history = figures.compare_history_figure({"a": data.best_so_far(frame), "b": data.best_so_far(frame)})
    assert len(history.data) == 2


# --- the page -----------------------------------------------------------------------------------

def _plot_count(html: str) -> int:
    return len(re.findall(r'class="plot-spec"', html))


def test_report_has_summary_figures_table_and_no_external_reference(tmp_path):
    folder = write_run(tmp_path / "run", 60, study=True, predictions=True)
    out = build.build_report(folder)
    html = out.read_text()
    assert out == folder / "report.html"
    assert _plot_count(html) == 5  # memory, history, importances, parallel coordinates, predictions
    assert "Copy ds_config.json" in html
    assert '"train_micro_batch_size_per_gpu"' in html.replace("&#34;", '"')
    best = json.loads((folder / "summary.json").read_text())["best"]
    assert f"trial {best['trial_number']}" in html
    assert html.count(get_plotlyjs()) == 1  # embedded once
    page = html.replace(get_plotlyjs(), "")
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)  # nothing loads from elsewhere
    assert "cdn.plot.ly" not in page and "mathjax" not in page.lower()


def test_report_draws_the_fastest_trials_gate_losses_over_the_reference_s(tmp_path):
    folder = write_run(tmp_path / "run", 12)
    assert "plot-losses" not in build.build_report(folder).read_text()  # no reference run: no figure
    reference = [7.64, 7.65, 7.65, 7.66]
    (folder / "reference").mkdir()
    (folder / "reference" / "numerics.json").write_text(json.dumps({"losses": reference, "grad_norm0": 1.0}))
    trials = pd.read_csv(folder / "trials.csv")
    finished = trials[(trials["status"] == "ok") & trials["number"].notna()]
    fastest = [int(n) for n in finished.sort_values("tokens_per_s", ascending=False)["number"]]
    for rank, number in enumerate(fastest):
        (folder / "trials" / str(number)).mkdir(parents=True)
        losses = [loss * (1 + 1e-6 * (rank + 1)) for loss in reference]
        (folder / "trials" / str(number) / "numerics.json").write_text(json.dumps({"losses": losses}))
    curves = data.gate_losses(data.load_run(folder))
    assert list(curves)[0].startswith("reference") and len(curves) == 1 + data.MAX_LOSS_CURVES
    assert list(curves)[1].startswith(f"trial {fastest[0]}:")  # the fastest first
    html = build.build_report(folder).read_text()
    assert "plot-losses" in html and "fp32 band" in html


def test_report_escapes_a_hostile_study_name_and_reason(tmp_path):
    hostile = "<script>alert(1)</script>"
    folder = write_run(tmp_path / "run", 8, study_name=hostile)
    trials = pd.read_csv(folder / "trials.csv", dtype={"reason": str})
    trials.loc[trials.index[-1], ["status", "reason"]] = ["failed", f"crash: {hostile}</script><img src=x>"]
    trials.to_csv(folder / "trials.csv", index=False)
    html = build.build_report(folder).read_text()
    assert hostile not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x>" not in html


def test_report_of_a_study_with_no_finished_trial_says_so(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "trials.csv").write_text(",".join(COLUMNS) + "\n")
    (folder / "summary.json").write_text(json.dumps({"study_name": "empty", "best": None}))
    html = build.build_report(folder).read_text()
    assert "No trial finished" in html and "No trial was recorded" in html
    assert _plot_count(html) == 0


def test_report_of_only_failed_trials_says_so_and_lists_them(tmp_path):
    folder = write_run(tmp_path / "run", 3)
    trials = pd.read_csv(folder / "trials.csv", dtype={"reason": str})
    trials["status"], trials["reason"] = "failed", "timeout: no step after 300 s"
    for column in ("tokens_per_s", "peak_bytes", "mfu"):
        trials[column] = None
    trials.to_csv(folder / "trials.csv", index=False)
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(best=None, baseline=None, speedup=None)
    (folder / "summary.json").write_text(json.dumps(summary))
    html = build.build_report(folder).read_text()
    assert "No trial finished" in html and "4 timeout" in html


def test_compare_sets_two_studies_side_by_side(tmp_path):
    a = write_run(tmp_path / "a", 30, study_name="on-h100", seed=1)
    b = write_run(tmp_path / "b", 30, study_name="on-h100", seed=2)
    html = build.compare_reports(a, b, tmp_path / "cmp.html")[0].read_text()
    assert _plot_count(html) == 2
    assert "on-h100 (" in html  # same study names are told apart by their folders
    assert html.count('class="panel best') == 2


def test_thousand_trial_report_builds_fast_and_small(tmp_path):
    folder = write_run(tmp_path / "run", 1000, study=True, predictions=True)
    started = time.perf_counter()
    out = build.build_report(folder)
    seconds = time.perf_counter() - started
    size_mb = out.stat().st_size / 1e6
    print(f"\n1,000-trial report: {seconds:.2f} s, {size_mb:.2f} MB")
    assert seconds < 30 and size_mb < 10


def test_two_hundred_trial_report_is_a_few_megabytes(tmp_path):
    out = build.build_report(write_run(tmp_path / "run", 200, study=True))
    size_mb = out.stat().st_size / 1e6
    print(f"\n200-trial report: {size_mb:.2f} MB")
    assert size_mb < 6


# --- the commands -------------------------------------------------------------------------------

def test_report_command_writes_the_file(tmp_path, capsys):
    folder = write_run(tmp_path / "run", 5)
    out = tmp_path / "r.html"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


def test_compare_command_writes_the_file(tmp_path):
    a, b = write_run(tmp_path / "a", 5, study_name="a"), write_run(tmp_path / "b", 5, study_name="b")
    out = tmp_path / "c.html"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    assert out.is_file()


def test_report_command_on_a_missing_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run folder" in err


def test_a_folder_without_trials_csv_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no trials.csv"):
        build.build_report(tmp_path)


def test_compare_verdict_says_faster_or_slower_in_words_only_beyond_the_confirmed_intervals():
    apart = [(95.0, 105.0), (125.0, 135.0)]
    assert build._verdict(["a", "b"], [100.0, 130.0], apart) == "b's best is 1.30× as fast as a's (30% more tokens/s)."
    assert build._verdict(["a", "b"], [100.0, 80.0], [(95.0, 105.0), (75.0, 85.0)]) == \
        "b's best is 20% slower than a's (0.80× the tokens/s)."
    assert build._verdict(["a", "b"], [100.0, 104.0], [(95.0, 105.0), (99.0, 109.0)]).startswith(
        "The best configs of b and a are equally fast within the noise")
    assert "no established difference" in build._verdict(["a", "b"], [100.0, 62.0], [None, None])
    assert build._verdict(["a", "b"], [100.0, None], [None, None]) is None


def test_compare_refuses_studies_of_different_models(tmp_path):
    a = write_run(tmp_path / "a", 5, seed=1)
    b = write_run(tmp_path / "b", 5, seed=2)
    summary = json.loads((b / "summary.json").read_text())
    summary["model"]["name"] = "gpt-1.3b"
    (b / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match="measure different models"):
        build.compare_reports(a, b, tmp_path / "cmp.html")


def test_compare_of_a_plan_and_a_measured_study_warns_in_one_line(tmp_path):
    a = write_run(tmp_path / "a", 5, seed=1)
    b = write_run(tmp_path / "b", 5, seed=2)
    summary = json.loads((b / "summary.json").read_text())
    summary.update(predicted=True, world_size=64, hardware={"name": "h100-sxm"})
    (b / "summary.json").write_text(json.dumps(summary))
    path, caveat = build.compare_reports(a, b, tmp_path / "cmp.html")
    assert "\n" not in caveat and "provenance measured vs predicted" in caveat and "world size" in caveat
    assert caveat.split(",")[0] in path.read_text()
    _, same = build.compare_reports(a, a, tmp_path / "same.html")
    assert same is None


def test_a_plans_report_carries_the_predicted_banner_and_counts_predictions(tmp_path):
    folder = write_run(tmp_path / "run", 6)
    trials = pd.read_csv(folder / "trials.csv", dtype={"reason": str})
    ok = trials["status"] == "ok"
    trials.loc[ok, "pred_tokens_per_s"], trials.loc[ok, "pred_peak_bytes"] = trials["tokens_per_s"], trials["peak_bytes"]
    trials.loc[ok, ["tokens_per_s", "peak_bytes", "mfu"]] = None
    trials.loc[ok, "status"] = "predicted"
    trials.to_csv(folder / "trials.csv", index=False)
    summary = json.loads((folder / "summary.json").read_text()) | {"predicted": True}
    (folder / "summary.json").write_text(json.dumps(summary))
    html = build.build_report(folder).read_text()
    assert "PREDICTED, not measured" in html
    assert f"points PREDICTED by the cost model, none run: {int(ok.sum())} predicted to fit" in html
    assert _plot_count(html) >= 1  # the predicted points are still drawn
