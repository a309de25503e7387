"""The HTML trend page: each config's metrics over the history, and the latest comparison as a table.

Split as in autoscale/reports/: `trend_frame` is the data (testable without plotly), `trend_figure` one figure,
`render_trend` the page. The page extends the run report's base template, so it is self-contained in
the same way: plotly.js inlined once, figure specs as escaped JSON, nothing fetched.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from autoscale.bench.history import HistoryEntry
from autoscale.bench.junit import describe
from autoscale.bench.metrics import METRICS

VERDICT_COLORS = {"regressed": "#dc2626", "failed": "#7c2d12", "improved": "#16a34a", "unchanged": "#2563eb",
                  "not comparable": "#6b7280", "inconclusive": "#ca8a04", "": "#6b7280"}
MIB = 2**20

PAGE = """{% extends "base.html.j2" %}
{% from "_macros.html.j2" import plot_section %}
{% block body %}
<header>
  <div class="kicker">autoscale bench</div>
  <h1>{{ suite }}</h1>
  <div class="subtitle">{{ runs }} run(s) in the history · latest {{ latest.created_at }} · commit
    <code>{{ (latest.git_commit or "–")[:10] }}</code> · {{ latest.hardware.description }}
    ({{ latest.hardware.device }})</div>
</header>
<section class="panel">
  <h2>Latest run against its baseline ({{ mode }})</h2>
  {% if rows %}
  {% if mode == "A/B" %}
  <p class="caption">A/B: both sides measured in this job in alternating rounds. Paired ratio = geometric mean
    of the per-round ratios (latest / baseline side), with its t interval; a change counts only when the whole
    interval is past the threshold and the Wilcoxon signed-rank test agrees.</p>
  {% else %}
  <p class="caption">Ratio = latest median / baseline median, with its bootstrap confidence interval; a change
    counts only when the whole interval is past the threshold and the Mann-Whitney test agrees; "inconclusive"
    when the host's load differed between the two runs.</p>
  {% endif %}
  <table class="knobs">
    <thead><tr><th>config</th><th>metric</th><th>verdict</th><th>detail</th></tr></thead>
    <tbody>
    {% for row in rows %}
      <tr class="{{ 'differs' if row.verdict in ('regressed', 'failed') else '' }}"><td>{{ row.case }}</td>
        <td>{{ row.metric }}</td><td>{{ row.verdict }}</td><td>{{ row.text }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  {% else %}
  <p class="empty">The latest run had no baseline to compare with.</p>
  {% endif %}
  {% if changes %}<p class="caption">Changed since the baseline: {{ changes | join("; ") }}</p>{% endif %}
</section>
<div class="plots">
{% for plot in plots %}{{ plot_section(plot) }}{% endfor %}
</div>
{% endblock %}
"""


def trend_frame(history: list[HistoryEntry]) -> pd.DataFrame:
    """One row per run, config and metric: the median and range of its samples, and its verdict."""
    rows = []
    for entry in history:
        verdicts = {(row["case"], row["metric"]): row["verdict"] for row in entry.rows}
        record = entry.record
        for case, samples in record.cases.items():
            for metric, values in samples.samples.items():
                if not values:
                    continue
                rows.append({"created_at": record.created_at, "git_commit": (record.git_commit or "")[:10],
                             "case": case, "metric": metric, "median": float(np.median(values)),
                             "low": float(np.min(values)), "high": float(np.max(values)), "n": len(values),
                             "verdict": verdicts.get((case, metric), "")})
    return pd.DataFrame(rows, columns=["created_at", "git_commit", "case", "metric", "median", "low", "high", "n",
                                       "verdict"])


def trend_figure(frame: pd.DataFrame, metric: str, baseline_median: float | None = None) -> go.Figure:
    """One metric of one config over time: median per run, whiskers to the extreme samples, coloured
    by that run's verdict; the baseline's median as a dashed line."""
    info = METRICS[metric]
    scale, unit = (MIB, "MiB") if info.unit == "bytes" else (1.0, info.unit)
    hover = [f"{escape(str(r.created_at))}<br>commit {escape(r.git_commit or '–')}<br>median {r.median / scale:.4g} "
             f"{unit} ({r.n} samples)<br>{escape(r.verdict or 'no baseline')}" for r in frame.itertuples()]
    fig = go.Figure(go.Scatter(
        x=frame["created_at"], y=frame["median"] / scale, mode="lines+markers", name="median",
        error_y=dict(type="data", symmetric=False, array=(frame["high"] - frame["median"]) / scale,
                     arrayminus=(frame["median"] - frame["low"]) / scale, thickness=1),
        marker=dict(size=10, color=[VERDICT_COLORS.get(v, "#6b7280") for v in frame["verdict"]]),
        line=dict(color="#94a3b8", width=1), text=hover, hovertemplate="%{text}<extra></extra>"))
    if baseline_median is not None:
        fig.add_hline(y=baseline_median / scale, line_dash="dash", line_color="#6b7280",
                      annotation_text="baseline median", annotation_position="top left")
    better = "higher is better" if info.higher_is_better else "lower is better"
    fig.update_layout(template="plotly_white", height=320, margin=dict(l=60, r=20, t=30, b=40), showlegend=False,
                      yaxis_title=f"{unit} ({better})")
    return fig


def render_trend(history: list[HistoryEntry]) -> str:
    from autoscale.reports.build import plot_block, plotly_js_source, template_env

    latest = history[-1]
    frame = trend_frame(history)
    baseline_medians = {(row["case"], row["metric"]): row["comparison"]["baseline_median"] for row in latest.rows}
    plots = []
    for (case, metric), group in frame.groupby(["case", "metric"], sort=False):
        title = f"{case}: {METRICS[metric].label}"
        caption = f"{len(group)} run(s); whiskers span each run's samples; colour = that run's verdict."
        plot_id = f"{len(plots)}"
        figure = trend_figure(group, metric, baseline_medians.get((case, metric)))
        plots.append(plot_block(plot_id, title, caption, figure))
    rows = [{"case": row["case"], "metric": row["metric"], "verdict": row["verdict"], "text": _row_text(row)}
            for row in latest.rows]
    record = latest.record
    return template_env().from_string(PAGE).render(
        title=f"bench {record.suite}", suite=record.suite, runs=len(history), latest=record, rows=rows, mode=latest.mode,
        changes=latest.changes, plots=plots, plotly_js=plotly_js_source())


def _row_text(row: dict) -> str:
    from autoscale.bench.compare import MetricRow
    from autoscale.bench.stats import Comparison

    fields = {k: v for k, v in row.items() if k != "verdict"}
    fields["comparison"] = Comparison(**fields["comparison"])
    return describe(MetricRow(**fields))


def write_trend(history: list[HistoryEntry], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_trend(history), encoding="utf-8")
    return path
