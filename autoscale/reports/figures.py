"""Figure builders: one function per figure, each turning frames from `reports.data` into a plotly
Figure. Nothing here reads files. Every user-controlled string that plotly would render as its
pseudo-HTML (reasons, knob values, study names) goes through `html.escape` first.
"""

from __future__ import annotations

from html import escape

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autoscale.results import KNOB_COLUMNS

from autoscale.reports.data import FAILURE_KINDS, describe_row

GIB = 2**30
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
INK, MUTED, GRID = "#1f2937", "#6b7280", "#e5e7eb"
ACCENT = "#2563eb"
STAGE_COLORS = {0: "#94a3b8", 1: "#0ea5e9", 2: "#6366f1", 3: "#a855f7"}
FAILURE_STYLE = {  # kind -> (label, symbol, colour)
    "oom": ("OOM", "x", "#dc2626"),
    "timeout": ("timeout", "hourglass", "#d97706"),
    "crash": ("crash", "bowtie", "#7c2d12"),
    "nan": ("NaN loss", "cross", "#db2777"),
    "diverged": ("diverged from the reference", "star-triangle-up-open", "#be185d"),
    "interrupted": ("interrupted (Ctrl-C)", "circle-open", "#6b7280"),
    "preempted": ("preempted (Slurm)", "diamond-open", "#6b7280"),
    "node-failure": ("node failure (Slurm)", "diamond-x", "#6b7280"),
    "cancelled": ("cancelled (scancel)", "diamond-tall-open", "#6b7280"),
    "pruned": ("pruned by the model", "triangle-down", "#64748b"),
    "invalid": ("invalid", "square-x-open", "#475569"),
    "other": ("other failure", "circle-x-open", "#111827"),
}
RUN_COLORS = ("#2563eb", "#ea580c")
LOSS_COLORS = (ACCENT, "#ea580c", "#16a34a", "#a855f7")  # one per curve of data.MAX_LOSS_CURVES
assert set(FAILURE_KINDS) <= set(FAILURE_STYLE)


def _layout(fig: go.Figure, *, height: int = 420, **kwargs) -> go.Figure:
    settings = dict(template="plotly_white", height=height, font=dict(family=FONT, color=INK, size=13),
                    margin=dict(l=60, r=20, t=40, b=50), hoverlabel=dict(font_family=FONT),
                    legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    fig.update_layout(**(settings | kwargs))
    return fig


def _hover(frame: pd.DataFrame) -> list[str]:
    texts = []
    for _, row in frame.iterrows():
        number = "baseline" if row["is_baseline"] else (
            f"trial {int(row['number'])}" if pd.notna(row["number"]) else "trial ?")
        lines = [f"<b>{number}</b>", escape(describe_row(row))]
        if pd.notna(row["tokens_per_s"]):
            lines.append(f"{row['tokens_per_s']:,.0f} tokens/s")
        if pd.notna(row["peak_bytes"]):
            lines.append(f"peak {row['peak_bytes'] / GIB:.2f} GiB")
        if pd.notna(row["mfu"]):
            lines.append(f"MFU {row['mfu']:.1%}")
        if row["reason"]:
            lines.append(escape(row["reason"][:160]))
        texts.append("<br>".join(lines))
    return texts


def throughput_memory_figure(frame: pd.DataFrame, front: pd.DataFrame, usable_bytes: float | None,
                             best_number: float | None = None) -> go.Figure:
    """Every trial's throughput against its peak memory, coloured by ZeRO stage; the Pareto front as a
    line; the memory limit as a dashed line. Trials that did not finish sit on the zero line at their
    predicted peak (an OOM without a prediction at the limit: it went over); the rest are counted in
    a note, since they have no memory figure to place them by."""
    fig = go.Figure()
    done = frame[(frame["status"] == "ok") & frame["tokens_per_s"].notna() & frame["peak_bytes"].notna()]
    searched = done[~done["is_baseline"]]
    for stage, group in searched.groupby(searched["zero_stage"].fillna(-1)):
        fig.add_trace(go.Scatter(
            x=group["peak_bytes"] / GIB, y=group["tokens_per_s"], mode="markers", name=f"ZeRO-{int(stage)}"
            if stage >= 0 else "ZeRO-?", text=_hover(group), hovertemplate="%{text}<extra></extra>",
            marker=dict(size=9, color=STAGE_COLORS.get(int(stage), MUTED), opacity=0.85,
                        line=dict(width=0.5, color="white"))))
    if not front.empty:
        fig.add_trace(go.Scatter(
            x=front["peak_bytes"] / GIB, y=front["tokens_per_s"], mode="lines+markers", name="Pareto front",
            line=dict(color=ACCENT, width=2, shape="hv"), hoverinfo="skip",
            marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(color=ACCENT, width=2))))
    baseline = done[done["is_baseline"]]
    if not baseline.empty:
        fig.add_trace(go.Scatter(
            x=baseline["peak_bytes"] / GIB, y=baseline["tokens_per_s"], mode="markers", name="baseline",
            text=_hover(baseline), hovertemplate="%{text}<extra></extra>",
            marker=dict(size=13, symbol="diamond", color="#facc15", line=dict(width=1, color=INK))))
    if best_number is not None:
        best = done[done["number"] == best_number]
        if not best.empty:
            fig.add_trace(go.Scatter(
                x=best["peak_bytes"] / GIB, y=best["tokens_per_s"], mode="markers", name="best",
                text=_hover(best), hovertemplate="%{text}<extra></extra>",
                marker=dict(size=20, symbol="star", color="#f59e0b", line=dict(width=1, color=INK))))
    max_peak = float(done["peak_bytes"].max()) if not done.empty else 0.0
    show_limit = bool(usable_bytes) and (max_peak >= 0.25 * usable_bytes or done.empty)
    edge = 1.1 * max(max_peak, usable_bytes if show_limit else 0) or None
    unplaced = _add_failures(fig, frame, usable_bytes, edge)
    notes = []
    if usable_bytes:
        if show_limit:
            fig.add_vline(x=usable_bytes / GIB, line=dict(color="#dc2626", dash="dash", width=2),
                          annotation_text=f"usable memory {usable_bytes / GIB:.1f} GiB",
                          annotation_position="top left", annotation_font_color="#dc2626")
        else:
            notes.append(f"usable memory {usable_bytes / GIB:.1f} GiB is off the chart →")
    if unplaced:
        notes.append("not placed (no memory figure): " + ", ".join(f"{n} {FAILURE_STYLE[k][0]}"
                                                                 for k, n in unplaced.items()))
    for i, note in enumerate(notes):
        fig.add_annotation(text=note, xref="paper", yref="paper", x=0.01, y=0.98 - 0.07 * i, showarrow=False,
                           xanchor="left", font=dict(color=MUTED, size=12))  # top left: the front never goes there
    # from zero only when the usable memory is drawn: else the trials' spread fills the axis
    fig.update_xaxes(title_text="peak memory per rank (GiB)", rangemode="tozero" if show_limit else "normal",
                     gridcolor=GRID)
    fig.update_yaxes(title_text="throughput (tokens/s)", rangemode="tozero", gridcolor=GRID)
    return _layout(fig, height=480, showlegend=True)


def _add_failures(fig: go.Figure, frame: pd.DataFrame, usable_bytes: float | None,
                  edge_bytes: float | None) -> dict[str, int]:
    """Failed trials on the zero line; a prediction far past the chart (`edge_bytes`) is drawn at
    the edge, its hover text giving the real figure, so one wild guess cannot squeeze the rest."""
    unplaced: dict[str, int] = {}
    failed = frame[frame["failure"] != ""]
    for kind, group in failed.groupby("failure"):
        x = group["pred_peak_bytes"].copy()
        if kind == "oom" and usable_bytes:
            x = x.fillna(usable_bytes)
        placed = group[x.notna()]
        if len(placed) < len(group):
            unplaced[kind] = len(group) - len(placed)
        if placed.empty:
            continue
        x = x[x.notna()]
        text = [t + (f"<br>predicted peak {b / GIB:.1f} GiB" if pd.notna(p) else "<br>peak over the limit")
                for t, b, p in zip(_hover(placed), x, placed["pred_peak_bytes"])]
        if edge_bytes:
            x = x.clip(upper=edge_bytes)
        label, symbol, color = FAILURE_STYLE.get(kind, FAILURE_STYLE["other"])
        fig.add_trace(go.Scatter(
            x=x / GIB, y=[0] * len(placed), mode="markers", name=f"{label} ({len(group)})",
            text=text, hovertemplate="%{text}<extra></extra>", cliponaxis=False,
            marker=dict(size=11, symbol=symbol, color=color, line=dict(width=1.5, color=color))))
    return unplaced


def history_figure(by_number: pd.DataFrame, by_wall: pd.DataFrame) -> go.Figure:
    """Best throughput so far against trial number and against wall time since the run started."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by trial number", "by wall time"),
                        horizontal_spacing=0.08)
    for col, history, scale in ((1, by_number, 1.0), (2, by_wall, 1 / 60)):
        measured = history.dropna(subset=["tokens_per_s"])
        fig.add_trace(go.Scatter(
            x=measured["x"] * scale, y=measured["tokens_per_s"], mode="markers", name="trial",
            showlegend=col == 1, legendgroup="trial", marker=dict(size=7, color="#94a3b8"),
            customdata=measured["number"], hovertemplate="trial %{customdata}: %{y:,.0f} tokens/s<extra></extra>"),
            row=1, col=col)
        best = history.dropna(subset=["best_tokens_per_s"])
        fig.add_trace(go.Scatter(
            x=best["x"] * scale, y=best["best_tokens_per_s"], mode="lines", name="best so far",
            showlegend=col == 1, legendgroup="best", line=dict(color=ACCENT, width=3, shape="hv"),
            hovertemplate="best so far: %{y:,.0f} tokens/s<extra></extra>"), row=1, col=col)
    fig.update_xaxes(title_text="trial number", row=1, col=1, gridcolor=GRID)
    fig.update_xaxes(title_text="minutes since start", row=1, col=2, gridcolor=GRID)
    fig.update_yaxes(title_text="throughput (tokens/s)", rangemode="tozero", gridcolor=GRID, row=1, col=1)
    fig.update_yaxes(rangemode="tozero", gridcolor=GRID, row=1, col=2)
    fig.update_annotations(yshift=8)  # subplot titles clear of the legend
    return _layout(fig, height=400, margin=dict(l=60, r=20, t=80, b=50),
                   legend=dict(orientation="h", yanchor="bottom", y=1.12, x=0))


def importance_figure(importances: dict[str, float]) -> go.Figure:
    """Optuna's parameter importances as horizontal bars, the most important on top."""
    ranked = sorted(importances.items(), key=lambda item: item[1])
    fig = go.Figure(go.Bar(
        x=[value for _, value in ranked], y=[escape(name) for name, _ in ranked], orientation="h",
        marker_color=ACCENT, text=[f"{value:.0%}" for _, value in ranked], textposition="outside",
        hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    fig.update_xaxes(title_text="share of the throughput's variation", tickformat=".0%", gridcolor=GRID,
                     range=[0, max([v for _, v in ranked], default=1) * 1.2])
    return _layout(fig, height=max(240, 60 + 36 * len(ranked)), showlegend=False)


def parallel_coordinates_figure(frame: pd.DataFrame) -> go.Figure:
    """Finished trials across every knob that varied, coloured by throughput: which settings the
    fast trials share."""
    done = frame[(frame["status"] == "ok") & frame["tokens_per_s"].notna()]
    dimensions = []
    for knob in KNOB_COLUMNS:
        values = done[knob].dropna()
        if values.nunique() < 2:
            continue
        levels = sorted(values.unique(), key=lambda v: (isinstance(v, str), v))
        codes = {level: i for i, level in enumerate(levels)}
        dimensions.append(dict(
            label=knob, values=done[knob].map(codes).fillna(-1).tolist(), tickvals=list(range(len(levels))),
            ticktext=[escape(str(int(v) if isinstance(v, float) and v.is_integer() else v)) for v in levels]))
    if done["peak_bytes"].notna().any():
        dimensions.append(dict(label="peak GiB", values=(done["peak_bytes"] / GIB).round(3).tolist(),
                               tickformat=".2f"))
    dimensions.append(dict(label="tokens/s", values=done["tokens_per_s"].round(1).tolist(), tickformat=",.0f"))
    fig = go.Figure(go.Parcoords(
        dimensions=dimensions, labelfont=dict(size=13), tickfont=dict(size=11),
        line=dict(color=done["tokens_per_s"].tolist(), colorscale="Viridis", showscale=True,
                  colorbar=dict(title=dict(text="tokens/s"), x=1.06))))
    return _layout(fig, height=440, margin=dict(l=60, r=110, t=70, b=30))


def prediction_figure(predictions: pd.DataFrame) -> go.Figure:
    """The cost model's predictions against measurements, throughput and memory; the diagonal is a
    perfect prediction."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("throughput (tokens/s)", "peak memory (GiB)"),
                        horizontal_spacing=0.1)
    for col, (pred, measured, scale) in enumerate(
            (("pred_tokens_per_s", "tokens_per_s", 1.0), ("pred_peak_bytes", "peak_bytes", 1 / GIB)), start=1):
        pairs = predictions.dropna(subset=[pred, measured])
        fig.add_trace(go.Scatter(
            x=pairs[pred] * scale, y=pairs[measured] * scale, mode="markers", showlegend=False,
            marker=dict(size=8, color=ACCENT, opacity=0.8), customdata=pairs["number"],
            hovertemplate="trial %{customdata}<br>predicted %{x:,.3g}<br>measured %{y:,.3g}<extra></extra>"),
            row=1, col=col)
        if not pairs.empty:
            top = float(max(pairs[pred].max(), pairs[measured].max()) * scale * 1.05)
            fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", showlegend=False, hoverinfo="skip",
                                     line=dict(color=MUTED, dash="dot")), row=1, col=col)
        fig.update_xaxes(title_text="predicted", rangemode="tozero", gridcolor=GRID, row=1, col=col)
        fig.update_yaxes(title_text="measured", rangemode="tozero", gridcolor=GRID, row=1, col=col)
    return _layout(fig, height=380)


def compare_throughput_memory_figure(runs: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> go.Figure:
    """Two (or more) studies' finished trials on one throughput/memory plot, each with its front."""
    fig = go.Figure()
    for (label, (frame, front)), color in zip(runs.items(), RUN_COLORS * 4):
        done = frame[(frame["status"] == "ok") & frame["tokens_per_s"].notna() & frame["peak_bytes"].notna()]
        fig.add_trace(go.Scatter(
            x=done["peak_bytes"] / GIB, y=done["tokens_per_s"], mode="markers", name=escape(label),
            legendgroup=label, text=_hover(done), hovertemplate="%{text}<extra></extra>",
            marker=dict(size=8, color=color, opacity=0.6)))
        if not front.empty:
            fig.add_trace(go.Scatter(
                x=front["peak_bytes"] / GIB, y=front["tokens_per_s"], mode="lines", legendgroup=label,
                name=f"{escape(label)}: Pareto front", line=dict(color=color, width=2, shape="hv"),
                hoverinfo="skip"))
    fig.update_xaxes(title_text="peak memory per rank (GiB)", rangemode="normal",
                     gridcolor=GRID)
    fig.update_yaxes(title_text="throughput (tokens/s)", rangemode="tozero", gridcolor=GRID)
    return _layout(fig, height=460)


def compare_history_figure(histories: dict[str, pd.DataFrame]) -> go.Figure:
    """Best so far against trial number for each study."""
    fig = go.Figure()
    for (label, history), color in zip(histories.items(), RUN_COLORS * 4):
        best = history.dropna(subset=["best_tokens_per_s"])
        fig.add_trace(go.Scatter(
            x=best["x"], y=best["best_tokens_per_s"], mode="lines", name=escape(label),
            line=dict(color=color, width=3, shape="hv"),
            hovertemplate="trial %{x}: best %{y:,.0f} tokens/s<extra></extra>"))
    fig.update_xaxes(title_text="trial number", gridcolor=GRID)
    fig.update_yaxes(title_text="best throughput so far (tokens/s)", rangemode="tozero", gridcolor=GRID)
    return _layout(fig, height=380)


def loss_curves_figure(curves: dict[str, list[float]]) -> go.Figure:
    """The gate's first losses of the fastest trials over the reference run's (`data.gate_losses`),
    and below, each trial's relative gap to the reference per step on a log axis, with the bands the
    gate allows (`engine.numerics.RELATIVE_LOSS_TOLERANCE`)."""
    from autoscale.engine.numerics import RELATIVE_LOSS_TOLERANCE

    (reference_name, reference), *trials = curves.items()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4])
    steps = list(range(1, len(reference) + 1))
    fig.add_trace(go.Scatter(x=steps, y=reference, name=escape(reference_name), mode="lines",
                             line=dict(color=INK, width=3, dash="dash")), row=1, col=1)
    for (name, losses), color in zip(trials, LOSS_COLORS):
        shown = losses[:len(reference)]
        fig.add_trace(go.Scatter(x=steps, y=shown, name=escape(name), mode="lines+markers", line=dict(color=color)),
                      row=1, col=1)
        gaps = [max(abs(loss / ref - 1), 1e-9) for loss, ref in zip(shown, reference)]  # log axis: no zeros
        fig.add_trace(go.Scatter(x=steps, y=gaps, name=escape(name), mode="markers", marker=dict(color=color),
                                 showlegend=False), row=2, col=1)
    for precision, dash in (("fp32", "dot"), ("bf16", "dashdot")):  # as lines, not annotations: log axis
        band = RELATIVE_LOSS_TOLERANCE[precision]
        fig.add_trace(go.Scatter(x=[steps[0], steps[-1]], y=[band, band], name=f"{precision} band ({band:.0e})",
                                 mode="lines", line=dict(color=MUTED, dash=dash, width=1)), row=2, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="gap to reference", type="log", exponentformat="e", row=2, col=1)
    fig.update_xaxes(title_text="optimizer step", dtick=1, row=2, col=1)
    return _layout(fig, height=520)
