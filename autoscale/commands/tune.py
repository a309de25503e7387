"""`autoscale tune`: search the space with real trials and write the run folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from autoscale.console import make_console
from autoscale.errors import UserError
from autoscale.point import Point
from autoscale.results import TrialRecord
from autoscale.workload import DEFAULT_CONFIG_FLAG

console = make_console()


def format_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{value:.0f} B"
        value /= 1024
    return str(value)


class ConsoleObserver:
    """A progress bar over launched trials, one line per launched trial (numbered without gaps), and
    the points settled without a launch (pruned, repeated) as counts, not lines."""

    def __init__(self, total: int, progress: Progress, usable_bytes: int | None = None):
        self.progress, self.usable_bytes = progress, usable_bytes
        self.task = progress.add_task("trials", total=total)
        self.total = total
        self.pruned = 0
        self.repeats = 0

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def marks(self, record: TrialRecord) -> str:
        """Why a trial is special: the baseline, or launched although predicted past the usable memory."""
        if record.is_baseline:
            return "  (baseline)"
        predicted, usable = record.pred_peak_bytes, self.usable_bytes
        if record.status != "pruned" and predicted and usable and predicted > usable:
            return f"  (a risk: predicted {predicted / usable:.0%} of the usable memory)"
        return ""

    def trial_started(self, number: int, point: Point) -> None:
        label = "baseline" if number < 0 else "trial"  # -1: the baseline
        self.progress.update(self.task, description=f"{label}: {point.short()}")

    def trial_finished(self, record: TrialRecord, counted: int) -> None:
        if record.status == "pruned":
            self.pruned += 1
            self.progress.update(self.task, description=f"{self.pruned} pruned: predicted not to fit")
            return
        width = len(str(self.total))  # [launched so far/budget] and the trial's one name: trials.csv's number, trials/<#>/
        label = f"[{counted:>{width}}/{self.total}] trial #{record.number:<3}"
        config = escape(record.point.short() + self.marks(record))
        if record.status == "ok":
            r = record.result
            mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "-"
            line = (f"[green]ok[/]     {label}  {r.tokens_per_s:>10,.0f} tok/s  MFU {mfu:>6}  "
                    f"peak {format_bytes(r.peak_bytes):>10}  {r.wall_s:5.1f} s  {config}")
        else:
            line = f"[red]{record.status:<6}[/] {label}  {config}  {escape(record.reason)}"
        self.progress.console.print(line, highlight=False, markup=True)
        self.progress.update(self.task, completed=counted)

    def repeat_skipped(self, number: int, point: Point, earlier: int) -> None:
        self.repeats += 1

    def settled_lines(self) -> list[str]:
        """The points settled without a launch, one line per reason."""
        lines = []
        if self.pruned:
            lines.append(f"pruned {self.pruned} points predicted not to fit, never launched (reasons in trials.csv)")
        if self.repeats:
            lines.append(f"skipped {self.repeats} suggestions of points already measured or being measured")
        return lines


def confirmation_table(confirmation: dict) -> Table:
    """The finalists' head-to-head rounds: each config's tokens/s with its interval, the winner first."""
    table = Table(title=f"the winner, confirmed head to head in {confirmation['rounds']} interleaved rounds "
                        "(geometric mean, 95% interval)")
    for column in ("#", "config", "tokens/s", "interval", "samples"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for contender in confirmation["contenders"]:
        interval = contender["tokens_per_s"]
        table.add_row(str(contender["trial_number"]), Point.from_dict(contender["point"]).short(),
                      f"{interval['centre']:,.0f}" if interval else "-",
                      f"{interval['low']:,.0f}-{interval['high']:,.0f}" if interval else "-",
                      str(len(contender["samples"])))
    caption = []
    runner_up, baseline = confirmation["vs_runner_up"], confirmation["vs_baseline"]
    if runner_up:
        caption.append(("statistically tied with the runner-up: " if confirmation["tied"] else "ahead of the runner-up: ")
                       + f"{runner_up['centre']:.3f}x [{runner_up['low']:.3f}, {runner_up['high']:.3f}]")
    if baseline:
        caption.append(f"vs the baseline: {baseline['centre']:.2f}x [{baseline['low']:.2f}, {baseline['high']:.2f}]")
    if band := confirmation.get("band_after"):
        caption.append(f"one config moved {band['ratio'] - 1:.1%} between launches here")
    table.caption = "; ".join(caption)
    return table


def top_table(summary: dict, records: list[TrialRecord], limit: int = 5) -> Table:
    limit_bytes = summary.get("usable_bytes_per_rank")
    ok = sorted((r for r in records if r.status == "ok"), key=lambda r: -r.result.tokens_per_s)
    baseline = summary.get("baseline")
    base_tps = baseline["metrics"]["tokens_per_s"] if baseline else None
    table = Table(title=f"top configs of {summary['study_name']} (one trial each; #: trials.csv's number)")
    for column in ("#", "config", "tokens/s", "vs baseline", "TFLOP/s/dev", "MFU", "peak mem", "headroom"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for record in ok[:limit]:
        r = record.result
        headroom = f"{100 * (1 - r.peak_bytes / limit_bytes):.0f}%" if limit_bytes and r.peak_bytes else "-"
        table.add_row("base" if record.is_baseline else str(record.number), record.point.short(),
                      f"{r.tokens_per_s:,.0f}", f"{r.tokens_per_s / base_tps:.2f}x" if base_tps else "-",
                      f"{r.tflops_per_device:.3f}" if r.tflops_per_device is not None else "-",
                      f"{100 * r.mfu:.1f}%" if r.mfu is not None else "-",
                      format_bytes(r.peak_bytes), headroom)
    return table


def tune(
    ctx: typer.Context,
    model: str = typer.Option("gpt-tiny", help="Preset name (see `autoscale models`) or a Hugging Face config.json."),
    impl: Literal["own", "transformers"] = typer.Option(
        "own", help="What trials train: own (autoscale's model of --model) or transformers "
        "(AutoModelForCausalLM.from_config of the --model config.json, random weights)."),
    trials: int = typer.Option(12, min=1, help="Trials to measure, the baseline included."),
    space: Optional[str] = typer.Option(None, help="Search space: a name in search_spaces/ or a YAML path. "
                                        "Default: default (script with --script)."),
    global_batch: Optional[int] = typer.Option(None, min=1, help="Sequences per optimizer step, held fixed. Default: 8 per rank."),
    seq_len: Optional[int] = typer.Option(None, min=1, help="Tokens per sequence. Default: the model's, at most 8192 in a plan for GPUs (--backend model) and 1024 for trials."),
    backend: Literal["auto", "cpu", "cuda", "model"] = typer.Option("auto", help="auto, cpu, cuda (auto: cuda when a GPU is visible), or model: "
                                "plan on the cost model for --hardware x --gpus, nothing launched."),
    nproc: Optional[int] = typer.Option(None, min=1, help="Ranks per trial. Default: 2 on CPU, all GPUs on CUDA."),
    out: Optional[Path] = typer.Option(None, help="The study's folder. Default: runs/<study-name>."),
    study_name: Optional[str] = typer.Option(None, help="Default: <model>-<backend> (with --impl transformers: "
                                             "<model>-transformers-<backend>; a plan: "
                                             "<model>-<hardware>-<gpus>gpu-seq<seq-len>)."),
    timeout_per_trial: float = typer.Option(300.0, min=1, help="Seconds before a trial is killed as hung."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL. Default: sqlite in the study's folder."),
    resume: bool = typer.Option(False, help="Continue an existing study; measured points are kept."),
    seed: int = typer.Option(0, help="Seed of the sampler and of the synthetic data."),
    hardware: Optional[str] = typer.Option(None, help="--backend model: a catalog name (h100-sxm, a100-80gb, ...) or a YAML file."),
    gpus: Optional[int] = typer.Option(None, min=1, help="--backend model: devices in the cluster."),
    target: Optional[str] = typer.Option(None, help="--backend model: rank the layouts this engine runs "
                                         "(deepspeed, megatron-deepspeed, megatron, torchtitan, hf-trainer, ...). "
                                         "Default: deepspeed, the engine autoscale's trials measure with."),
    launcher: str = typer.Option("warm", help="warm: ranks kept as fork servers across trials (fast); "
                                 "fresh: new processes for every trial; slurm: an srun job step per trial."),
    hostfile: Optional[Path] = typer.Option(None, help="Trials span the nodes of this DeepSpeed hostfile "
                                            "(`host slots=N` lines), launched with DeepSpeed's launcher."),
    confirm_rounds: int = typer.Option(3, min=0, help="Before naming the winner, measure the configs that could "
                                       "be the best and the baseline again in this many interleaved rounds "
                                       "(0 or 1: skip)."),
    workers: int = typer.Option(0, min=0, help="--launcher slurm: submit this many `autoscale worker` jobs "
                                "(a Slurm job array) that measure the study's trials; needs --storage postgresql://..."),
    slurm_args: Optional[str] = typer.Option(None, help="--launcher slurm: srun/sbatch options for the trials' "
                                             "steps and the workers' jobs, e.g. '--partition=gpu --time=60'."),
    script: Optional[Path] = typer.Option(None, help="Measure this DeepSpeed training script instead of autoscale's "
                                          "own loop: `--script train.py -- ARGS` runs `python train.py ARGS "
                                          "--deepspeed_config TRIAL.json` on every rank of every trial."),
    script_config_flag: str = typer.Option(DEFAULT_CONFIG_FLAG, help="--script: the flag that hands the script "
                                           "its ds_config (HF Trainer scripts: --deepspeed)."),
) -> None:
    """Search DeepSpeed configs for a model with real training trials; write ds_config.json and a report."""
    from autoscale.session import TuneSession

    session = TuneSession.from_flags(model=model, trials=trials, space=space, global_batch=global_batch,
                                     seq_len=seq_len, backend=backend, nproc=nproc, out=out,
                                     study_name=study_name, timeout_per_trial=timeout_per_trial,
                                     storage=storage, resume=resume, seed=seed, command=sys.argv,
                                     hardware=hardware, gpus=gpus, launcher=launcher, hostfile=hostfile,
                                     confirm_rounds=confirm_rounds, workers=workers, slurm_args=slurm_args,
                                     script=script, script_args=tuple(ctx.args), script_config_flag=script_config_flag,
                                     impl=impl, target=target)
    run_session(session, console)


def run_session(session, console) -> None:
    """Run a prepared session with a progress bar, then print the top configs and write the outputs."""
    console.print(session.headline(), highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        observer = ConsoleObserver(session.config.trials, progress, session.config.usable_bytes_per_rank)
        outcome = session.run(observer=observer)
    for line in observer.settled_lines():
        console.print(line, highlight=False)
    summary = outcome.summary
    console.print(f"stopped: {outcome.stopped_because}", highlight=False)
    if summary["best"] is None and not outcome.interrupted:
        raise UserError(f"no trial succeeded; see {session.config.out_dir / 'trials.csv'} for the reasons")
    if summary["best"] is not None:
        console.print(top_table(summary, outcome.records))
        if outcome.confirmation is not None:
            console.print(confirmation_table(outcome.confirmation))
        speedup = summary.get("speedup")
        label = "best (PREDICTED, not measured)" if summary.get("predicted") else "best"
        label += " so far" if outcome.interrupted else ""
        confirmation = outcome.confirmation
        if confirmation is not None and confirmation["tied"]:
            label += f", statistically tied with trial {confirmation['contenders'][1]['trial_number']}"
        console.print(f"{label}: {summary['best']['description']}"
                      + (f", {speedup:.2f}x the baseline's tokens/s" if speedup else ""), highlight=False)
        if outcome.unconfirmed_because is not None:
            console.print(f"named without confirmation: {outcome.unconfirmed_because}", highlight=False)
    for line in session.finish(outcome):
        console.print(line, highlight=False)
    if outcome.interrupted:
        raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    app.command("tune", context_settings={"allow_extra_args": True})(tune)
