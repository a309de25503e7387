"""`autoscale bench`: run a suite of fixed configs, compare with a baseline, exit 1 on a regression."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from autoscale.bench.defaults import DEFAULT_HISTORY, DEFAULT_THRESHOLD
from autoscale.bench.priority import DEFAULT_NICE
from autoscale.console import make_console
from autoscale.errors import UserError

console = make_console()
VERDICT_STYLE = {"regressed": "bold red", "failed": "bold red", "improved": "green", "unchanged": "",
                 "not comparable": "yellow", "inconclusive": "yellow"}


class RepeatPrinter:
    def repeat_finished(self, case, repeat: int, result) -> None:
        if result.ok:
            line = (f"[green]ok[/]     {case.name} repeat {repeat + 1}/{case.repeats}  "
                    f"{result.tokens_per_s:>10,.0f} tok/s  step {result.step_s * 1e3:8.1f} ms  "
                    f"peak {result.peak_bytes / 2**20:8.1f} MiB")
        else:
            line = f"[red]failed[/] {case.name} repeat {repeat + 1}/{case.repeats}  {escape(result.reason)}"
        console.print(line, highlight=False)

    def side_finished(self, case, round_index: int, side: str, result) -> None:
        where = f"{case.name} round {round_index + 1}/{case.rounds} {side:<9}"
        if result.ok:
            m = result.metrics
            line = (f"[green]ok[/]     {where}  {m.get('tokens_per_s', 0):>10,.0f} tok/s  "
                    f"step {m.get('step_s', 0) * 1e3:8.1f} ms  peak {m.get('peak_bytes', 0) / 2**20:8.1f} MiB")
        else:
            line = f"[red]failed[/] {where}  {escape(result.reason)}"
        console.print(line, highlight=False)


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:,.1f} MiB" if unit == "bytes" else f"{value:.4g}"


def comparison_table(comparison) -> Table:
    from autoscale.bench.compare import AB

    if comparison.mode == AB:
        title = (f"A/B against {comparison.against} (paired ratio = this env / other, over rounds; 95% t interval, "
                 "Wilcoxon signed-rank p)")
    else:
        title = "against the baseline (ratio = now / baseline, 95% bootstrap interval, Mann-Whitney p)"
    table = Table(title=escape(title))
    for column in ("config", "metric", "baseline", "now", "ratio [interval]", "p", "threshold", "verdict"):
        table.add_column(column, justify="left" if column in ("config", "metric", "verdict") else "right")
    for row in comparison.rows:
        c = row.comparison
        ratio = "-" if c.ratio is None else f"{c.ratio:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]"
        style = VERDICT_STYLE.get(row.verdict, "")
        table.add_row(escape(row.case), row.metric, _value(c.baseline_median, row.unit),
                      _value(c.candidate_median, row.unit), ratio,
                      "-" if c.p_value is None else f"{c.p_value:.3g}", f"{row.threshold:.0%}",
                      f"[{style}]{row.verdict}[/]" if style else row.verdict)
    return table


def bench(
    suite: Path = typer.Option(..., help="Suite YAML: the fixed configs to time (see ci/suites/)."),
    baseline: Optional[Path] = typer.Option(None, help="Baseline JSON to compare with; exit 1 on a regression."),
    save_baseline: Optional[Path] = typer.Option(None, help="Save this run's samples as a baseline file."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, help="Smallest change that counts, as a fraction, for "
                                    "metrics whose threshold the suite does not set."),
    history: Path = typer.Option(DEFAULT_HISTORY, help="Folder that gets one JSON file per run."),
    junit: Optional[Path] = typer.Option(None, help="Write JUnit XML (one testcase per config and metric)."),
    html: Optional[Path] = typer.Option(None, help="Write the HTML trend page of the history."),
    allow_hardware_mismatch: bool = typer.Option(False, help="Compare with a baseline from other hardware."),
    workdir: Optional[Path] = typer.Option(None, help="Keep the trials' folders here (default: temporary)."),
    against: Optional[Path] = typer.Option(None, help="A/B mode: measure every config alternately with this "
                                           "environment and this other Python interpreter (e.g. the last "
                                           "release's venv/bin/python), in paired rounds; exit 1 if this "
                                           "environment is slower."),
    nice: int = typer.Option(DEFAULT_NICE, help="Change the trials' niceness by this much for the run (negative: "
                             "a higher priority, so other jobs' load weighs on the timed steps far less; needs "
                             "root or CAP_SYS_NICE, else they run as they are). 0 leaves it."),
    test_sleep_per_step: float = typer.Option(0.0, hidden=True, help="Test only: every timed step sleeps this "
                                              "many seconds more, a known slowdown to check detection with "
                                              "(with --against: this environment's side only)."),
) -> None:
    """Time a suite of fixed configs (fresh processes per repeat) and flag significant regressions."""
    from autoscale.bench.compare import AB
    from autoscale.bench.job import BenchOptions, run_bench
    from autoscale.bench.junit import describe

    if test_sleep_per_step < 0:
        raise UserError(f"--test-sleep-per-step must be 0 or more seconds, got {test_sleep_per_step}")

    options = BenchOptions(suite=suite, baseline=baseline, save_baseline=save_baseline, threshold=threshold,
                           history=history, junit=junit, html=html, allow_hardware_mismatch=allow_hardware_mismatch,
                           workdir=workdir, command=sys.argv, fault="slow" if test_sleep_per_step > 0 else None,
                           slow_step_s=test_sleep_per_step, against=against, nice=nice)
    outcome = run_bench(options, observer=RepeatPrinter())
    if outcome.priority_refused:
        console.print(f"[yellow]--nice {nice}[/]: {escape(outcome.priority_refused)}", highlight=False)
    comparison = outcome.comparison
    if outcome.other is not None:
        other, here = outcome.other, str(Path(__file__).resolve().parents[1])
        console.print(f"--against side: autoscale {other['versions'].get('autoscale')} from {other['autoscale_path']}"
                      f" (commit {(other['git_commit'] or '?')[:10]}), torch {other['versions'].get('torch')}, "
                      f"deepspeed {other['versions'].get('deepspeed')}", highlight=False, markup=False)
        if Path(other["autoscale_path"]).resolve() == Path(here):
            console.print("[yellow]both sides import autoscale from the same folder: only the interpreters' "
                          "libraries differ[/]", highlight=False)
    if comparison is not None:
        console.print(comparison_table(comparison))
        for note, names in (("new configs (not in the baseline)", comparison.new_cases),
                            ("in the baseline but not run", comparison.missing_cases),
                            ("configs changed since the baseline", comparison.changed_definitions),
                            ("changed since the baseline", comparison.environment_changes),
                            ("hardware differs (allowed)", comparison.hardware_differences)):
            if names:
                console.print(f"{note}: {escape('; '.join(names))}", highlight=False)
    for name, case in outcome.record.cases.items():
        if case.flaky:
            console.print(f"[yellow]retried[/] {escape(name)}: {escape('; '.join(case.flaky))}", highlight=False)
    for name, failures in outcome.record.failed_cases.items():
        console.print(f"[red]failed[/] {escape(name)}: {escape('; '.join(failures))}", highlight=False)
    for name, failures in outcome.baseline_failures.items():
        console.print(f"[red]failed on the --against side[/] {escape(name)}: {escape('; '.join(failures))}",
                      highlight=False)
    if comparison is not None and comparison.mode != AB:
        loads = [(what, (record.load or {}).get("loadavg_1m_during")) for what, record in
                 (("baseline", outcome.baseline_record), ("this run", outcome.record))]
        console.print("host load average during the run: " + ", ".join(
            f"{what} {'unknown' if value is None else f'{value:.2f}'}" for what, value in loads), highlight=False)
    if comparison is not None and comparison.inconclusive:
        console.print(f"[yellow]inconclusive[/]: {len(comparison.inconclusive)} metric(s)"
                      + "".join(f"\n  {escape(describe(row))}" for row in comparison.inconclusive), highlight=False)
    if outcome.baseline_refused:
        console.print(f"[red]baseline {outcome.baseline_refused}[/]", highlight=False)
    if junit is not None and comparison is None:
        console.print("no JUnit written: without --baseline or --against there is nothing to pass or fail", highlight=False)
    for what, path in outcome.written.items():
        console.print(f"wrote {what}: {escape(str(path))}", highlight=False)
    if outcome.regressed:
        regressions = comparison.regressions if comparison else []
        failed = len(outcome.record.failed_cases) + len(outcome.baseline_failures)
        console.print(f"[bold red]REGRESSION[/]: {len(regressions)} metric(s) regressed or failed, "
                      f"{failed} config(s) with failed repeats"
                      + "".join(f"\n  {escape(describe(row))}" for row in regressions), highlight=False)
        raise typer.Exit(1)
    if comparison is not None:
        improved = comparison.improvements
        console.print(f"no regression; {len(improved)} metric(s) improved" +
                      "".join(f"\n  {escape(describe(row))}" for row in improved), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
