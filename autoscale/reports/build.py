"""Write the HTML report of a run folder, and the comparison of two.

The page is one self-contained file: plotly.js inlined once, figures and the trials table as JSON in
`<script type="application/json">` blocks, a little vanilla JS; nothing is fetched, so it opens from
a laptop, a CI artifact or an air-gapped cluster alike. Jinja2 autoescapes every string; JSON put in
a script block has `<`, `>` and `&` as \\u escapes so no user string can close the block.
"""

from __future__ import annotations

import json
import math
import shlex
from functools import lru_cache
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from autoscale.results import KNOB_COLUMNS
from autoscale.userfiles import writing_to
from autoscale.reports import data, figures

COMPACT_COLUMNS = ("number", "status", "tokens_per_s", "peak_bytes", "mfu", "config", "reason")
"""What the trials table shows by default, narrow enough for a laptop: the knobs as one `config` cell."""
TABLE_COLUMNS = (*COMPACT_COLUMNS, "tflops_per_device", *KNOB_COLUMNS, "samples_per_s", "loss", "steps", "step_s",
                 "wall_s", "launch_s", "pred_tokens_per_s", "pred_peak_bytes", "is_baseline", "started_at")


def build_report(run_dir: Path, out: Path | None = None) -> Path:
    """Render `run_dir`'s report to `out` (default `run_dir/report.html`) and return the path."""
    run = data.load_run(Path(run_dir))
    out = Path(out) if out is not None else run.path / "report.html"
    page = render_report(run)
    with writing_to(out):
        out.write_text(page, encoding="utf-8")
    return out


def compare_reports(run_a: Path, run_b: Path, out: Path) -> tuple[Path, str | None]:
    """Render two studies of one model side by side (two machines, commits or world sizes) to `out`;
    return the path and the caveat the page also shows (`data.comparison_caveat`)."""
    runs = [data.load_run(Path(run_a)), data.load_run(Path(run_b))]
    caveat = data.comparison_caveat(runs)
    out = Path(out)
    page = render_compare(runs)
    with writing_to(out):
        out.write_text(page, encoding="utf-8")
    return out, caveat


def render_report(run: data.Run) -> str:
    frame = run.trials
    importances = data.param_importances(run.path, run.summary.get("study_name"))
    card = data.headline(run)
    front = data.pareto_front(frame)
    limit = run.usable_bytes
    finished = data.finished(frame)
    plots = []
    if not frame.empty:
        plots.append(plot_block("memory", "Throughput against peak memory",
                           "Every trial; the Pareto front joins the configs nothing beats on both axes. Hover "
                           "a point for its config.",
                           figures.throughput_memory_figure(frame, front, limit,
                                                            card["trial_number"] if card else None)))
    if not finished.empty:
        plots.append(plot_block("history", "Optimisation history", "Best feasible throughput found so far.",
                           figures.history_figure(data.best_so_far(frame, limit, "number"),
                                                  data.best_so_far(frame, limit, "wall"))))
    if importances.values:
        plots.append(plot_block("importance", "Which knobs mattered",
                           "Optuna's parameter importances (PED-ANOVA) for throughput.",
                           figures.importance_figure(importances.values)))
    if len(finished) >= 2:
        plots.append(plot_block("parallel", "Knobs of the finished trials",
                           "One line per finished trial, coloured by throughput; drag along an axis to filter.",
                           figures.parallel_coordinates_figure(frame)))
    losses = data.gate_losses(run)
    if losses:
        plots.append(plot_block("losses", "The fastest configs train the same model",
                           "The numerics gate's first steps: each of the fastest trials' losses over the reference "
                           "run's (fp32, ZeRO-0, the same batches), and their relative gap to it.",
                           figures.loss_curves_figure(losses)))
    predictions = data.predicted_vs_measured(frame)
    if not predictions.empty:
        plots.append(plot_block("prediction", "Cost model: predicted against measured",
                           "Points on the dotted diagonal were predicted exactly.",
                           figures.prediction_figure(predictions)))
    return template_env().get_template("report.html.j2").render(
        title=run.study_name, run=_run_context(run), card=card, findings=data.findings(run, importances),
        importance_note=importances.note, plots=plots, table=_script_json(_table(frame)),
        ds_config=json.dumps(run.ds_config, indent=2) if run.ds_config is not None else None,
        plotly_js=plotly_js_source())


def render_compare(runs: list[data.Run]) -> str:
    labels = _labels(runs)
    sides = [{"label": label, "run": _run_context(run), "card": data.headline(run)} for label, run in zip(labels, runs)]
    knob_rows = [{"knob": knob, "values": [(side["card"] or {}).get("point", {}).get(knob, "–") for side in sides]}
                 for knob in KNOB_COLUMNS]
    tokens = [(side["card"] or {}).get("tokens_per_s") for side in sides]
    verdict = " ".join(filter(None, [_verdict(labels, tokens, [data.best_interval(run) for run in runs]),
                                     data.comparison_caveat(runs), data.load_difference(runs)]))
    plots = [
        plot_block("compare-memory", "Throughput against peak memory", "Finished trials of both studies.",
              figures.compare_throughput_memory_figure(
                  {label: (run.trials, data.pareto_front(run.trials)) for label, run in zip(labels, runs)})),
        plot_block("compare-history", "Optimisation history", "Best feasible throughput so far, by trial number.",
              figures.compare_history_figure(
                  {label: data.best_so_far(run.trials, run.usable_bytes) for label, run in zip(labels, runs)})),
    ]
    return template_env().get_template("compare.html.j2").render(
        title=f"{labels[0]} vs {labels[1]}", sides=sides, knob_rows=knob_rows, verdict=verdict, plots=plots,
        plotly_js=plotly_js_source())


def _verdict(labels: list[str], tokens: list[float | None], intervals: list[tuple[float, float] | None]) -> str | None:
    """One sentence on how the second study's best compares with the first's; never a difference that
    the studies' own intervals cannot support."""
    if not all(tokens):
        return None
    if all(intervals):
        (low_a, high_a), (low_b, high_b) = intervals
        if low_b <= high_a and low_a <= high_b:
            return (f"The best configs of {labels[1]} and {labels[0]} are equally fast within the noise: their "
                    f"confirmed 95% intervals overlap ({low_a:,.0f}-{high_a:,.0f} and {low_b:,.0f}-{high_b:,.0f} tokens/s).")
    elif abs(tokens[1] / tokens[0] - 1) < 0.5:
        return (f"{labels[1]}'s best measured {tokens[1] / tokens[0]:.2f}x {labels[0]}'s tokens/s, one trial each: "
                "without a confirmed interval on both sides (tune --confirm-rounds) that is no established "
                "difference on a shared machine.")
    ratio = tokens[1] / tokens[0]
    if abs(ratio - 1) < 0.005:
        return f"The best configs of {labels[1]} and {labels[0]} run equally fast."
    if ratio > 1:
        return f"{labels[1]}'s best is {ratio:.2f}× as fast as {labels[0]}'s ({ratio - 1:.0%} more tokens/s)."
    return f"{labels[1]}'s best is {1 - ratio:.0%} slower than {labels[0]}'s ({ratio:.2f}× the tokens/s)."


def _labels(runs: list[data.Run]) -> list[str]:
    names = [run.study_name for run in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{name} ({run.path.resolve().parent.name}/{run.path.name})" if names.count(name) > 1 else name
            for name, run in zip(names, runs)]


def plot_block(plot_id: str, title: str, caption: str, fig: go.Figure) -> dict:
    """A figure for the template; its div gets the figure's height, since plotly's responsive mode
    sizes the plot to its div."""
    return {"id": plot_id, "title": title, "caption": caption, "height": int(fig.layout.height or 420),
            "spec": _script_json(fig.to_json())}


def _script_json(value) -> Markup:
    """JSON that is safe inside a <script> block: `<`, `>`, `&` only occur in JSON strings, where
    their \\u escapes decode to the same text."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _table(frame: pd.DataFrame) -> dict:
    """Columns that hold anything, and rows as lists with null for missing values; `extra` names the
    columns shown only when the reader asks for all of them."""
    if not frame.empty and all(k in frame.columns for k in KNOB_COLUMNS):
        frame = frame.assign(config=[data.describe_row(row, short=True) for _, row in frame.iterrows()])
    columns = [c for c in TABLE_COLUMNS if c in frame.columns and _has_values(frame[c])]
    rows = [[_cell(value) for value in record] for record in frame[columns].itertuples(index=False, name=None)]
    return {"columns": columns, "rows": rows, "extra": [c for c in columns if c not in COMPACT_COLUMNS]}


def _has_values(column: pd.Series) -> bool:
    return bool(column.notna().any()) and not (column.dtype == object and (column.fillna("") == "").all())


def _cell(value):
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return int(value) if value.is_integer() and abs(value) < 2**53 else round(value, 6)
    if isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _run_context(run: data.Run) -> dict:
    summary = run.summary
    command = summary.get("command")
    model = summary.get("model") or {}
    return {
        "name": run.study_name,
        "path": str(run.path),
        "model": model,
        "workload": summary.get("workload"),
        "hardware": summary.get("hardware") or {},
        "backend": summary.get("backend"),
        "world_size": summary.get("world_size"),
        "global_batch": summary.get("global_batch"),
        "seq_len": summary.get("seq_len"),
        "usable_bytes": run.usable_bytes,
        "host_load": summary.get("host_load"),
        "confirmation": (summary.get("best") or {}).get("confirmation"),
        "versions": summary.get("versions") or {},
        "git_commit": summary.get("git_commit"),
        "command": shlex.join(map(str, command)) if isinstance(command, list) else command,
        "storage": summary.get("storage"),
        "started_at": summary.get("started_at"),
        "finished_at": summary.get("finished_at"),
        "n_trials": len(run.trials),
        "predicted": run.predicted,
        "provenance": summary.get("provenance"),
        "counts": run.trials["status"].value_counts().to_dict(),
        "failures": data.failure_counts(run.trials),
    }


@lru_cache(maxsize=1)
def plotly_js_source() -> Markup:
    from plotly.offline import get_plotlyjs

    return Markup(get_plotlyjs())


@lru_cache(maxsize=1)
def template_env() -> Environment:
    env = Environment(loader=PackageLoader("autoscale.reports", "templates"), autoescape=True, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(gib=_gib, num=_num, pct=_pct)
    return env


def _gib(value) -> str:
    return "–" if value is None else f"{value / 2**30:,.2f} GiB"


def _num(value, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _pct(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"
