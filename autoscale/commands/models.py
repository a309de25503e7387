"""`autoscale models`: the presets with their sizes."""

from __future__ import annotations

import typer
from rich.table import Table


def models() -> None:
    """List the model presets with parameter counts and training FLOPs per token."""
    from autoscale.console import make_console
    from autoscale.models import PRESETS

    table = Table(title="model presets")
    for column in ("name", "params", "layers", "hidden", "heads", "vocab", "seq", "style", "GFLOP/token"):
        table.add_column(column, justify="left" if column in ("name", "style") else "right")
    for spec in PRESETS.values():
        style = "llama" if spec.activation == "swiglu" else "gpt"
        table.add_row(spec.name, f"{spec.param_count() / 1e6:,.1f}M", str(spec.n_layers), str(spec.hidden),
                      str(spec.n_heads), str(spec.vocab_size), str(spec.max_seq_len), style,
                      f"{spec.train_flops_per_token(spec.max_seq_len) / 1e9:.3g}")
    make_console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
