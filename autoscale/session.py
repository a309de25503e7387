"""From `autoscale tune`'s flags to a ready `TuneConfig`, and from the finished study to the run folder.

All defaults and all checks of user input live here, before any trial starts, so a mistake costs
one line and exit code 2, not a half-written run folder.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from pathlib import Path

from autoscale.backend import default_nproc, resolve_backend
from autoscale.budget import MemoryBudget
from autoscale.ds_config import to_ds_config, unexpressed, write_ds_config
from autoscale.engine.launchers import selectable_launchers
from autoscale.engine.memcap import memory_cap_record
from autoscale.errors import UserError
from autoscale.layout import default_seq_len, describe_skipped, resolve_global_batch, resolve_seq_len
from autoscale.layout_targets import TRIAL_ENGINE, LayoutTarget, get_layout_target
from autoscale.models import resolve_model
from autoscale.provenance import utc_now
from autoscale.results import RunInfo, best_record
from autoscale.space import dropped_choices, load_space
from autoscale.timing import add_report_time
from autoscale.tuner import Observer, TuneConfig, TuneOutcome, tune
from autoscale.workload import DEFAULT_CONFIG_FLAG, ScriptWorkload

if TYPE_CHECKING:
    from autoscale.hardware import Hardware

MIN_FREE_DISK_BYTES = 50 * 2**20
PROBE_WORDS = ("probe.step", "AutoscaleCallback")  # a script that names one of these reports to the probe
LAUNCHERS = selectable_launchers()  # the engine's registry; "hostfile" is chosen by --hostfile instead


def check_writable(out_dir: Path) -> None:
    """Fail before any trial if results could not be saved."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to --out {str(out_dir)!r}: {error.strerror or error}") from None
    free = shutil.disk_usage(out_dir).free
    if free < MIN_FREE_DISK_BYTES:
        raise UserError(f"--out {str(out_dir)!r}: only {free // 2**20} MiB free on its disk; "
                        f"need at least {MIN_FREE_DISK_BYTES // 2**20} MiB")


@dataclass
class TuneSession:
    config: TuneConfig
    info: RunInfo
    hardware: "Hardware"
    workers: int = 0  # --workers: an array of `autoscale worker` jobs measures the trials (launcher slurm)
    slurm_args: tuple[str, ...] = ()  # --slurm-args: options for srun and sbatch
    not_measured: tuple[str, ...] = ()  # the space's choices this backend drops (`dropped_choices`), for the headline
    notes: tuple[str, ...] = ()  # lines for the headline: how the flags were taken
    layout_target: "LayoutTarget" = TRIAL_ENGINE  # --backend model: the engine whose layouts are ranked (--target)

    @classmethod
    def from_flags(cls, *, model: str, trials: int, space: str | None, global_batch: int | None, seq_len: int | None,
                   backend: str, nproc: int | None, out: Path | None, study_name: str | None,
                   timeout_per_trial: float, storage: str | None, resume: bool, seed: int,
                   command: list[str], fault: str | None = None, hardware: str | None = None,
                   gpus: int | None = None, launcher: str = "warm",
                   hostfile: Path | None = None, confirm_rounds: int = 3, workers: int = 0,
                   slurm_args: str | None = None, script: Path | None = None, script_args: tuple[str, ...] = (),
                   script_config_flag: str = DEFAULT_CONFIG_FLAG, impl: str = "own",
                   target: str | None = None) -> "TuneSession":
        from autoscale.hardware import detect, get_hardware
        from autoscale.models.hf_model import workload_config

        spec = resolve_model(model)
        search_space = load_space(space or ("script" if script else "default"))
        backend = resolve_backend(backend)
        hf_config = workload_config(impl, model=model, spec=spec, backend=backend)
        if launcher not in LAUNCHERS:
            raise UserError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
        workload, notes = None, ()
        if script is not None or script_args:
            workload, launcher, notes = script_workload(script, script_args, script_config_flag, backend=backend,
                                                        launcher=launcher, hostfile=hostfile, seq_len=seq_len)
            search_space.check_scriptable()
        check_slurm_flags(launcher=launcher, workers=workers, storage=storage, slurm_args=slurm_args)
        if target is not None and backend != "model":
            raise UserError("--target names the engine a plan is for: use it with --backend model (trials run "
                            "autoscale's own DeepSpeed engine)")
        layout_target = get_layout_target(target or TRIAL_ENGINE.name)
        if backend == "model":
            if hardware is None:
                raise UserError("--backend model plans for a cluster: name it with --hardware (and --gpus)")
            target_hardware = get_hardware(hardware)
            nproc = gpus or nproc
            if nproc is None:
                raise UserError(f"--backend model plans for a cluster of --gpus devices: give --gpus (e.g. --gpus "
                                f"{target_hardware.gpus_per_node}, one node of {target_hardware.name})")
        elif hardware is not None or gpus is not None:
            raise UserError("--hardware and --gpus describe a cluster to plan for: use them with --backend model")
        else:
            target_hardware = detect(backend)
            nproc = nproc or default_nproc(backend)
        if hostfile is not None:
            from autoscale.engine.multinode import read_hostfile, select_hosts

            nproc = select_hosts(read_hostfile(hostfile))[1]  # the whole hostfile: one rank per slot
            launcher = "hostfile"
        on_gpu = backend == "model" and target_hardware.name != "cpu"  # a plan for GPUs; trials keep short sequences
        if seq_len is None and not workload:
            notes = (*notes, default_seq_len(spec, on_gpu=on_gpu)[1])
        seq_len = seq_len if workload else resolve_seq_len(spec, seq_len, on_gpu=on_gpu)
        global_batch = resolve_global_batch(global_batch, world_size=nproc)
        study_name = study_name or (f"{Path(workload.path).stem}-{backend}" if workload else
                                    plan_name(spec.name, target_hardware, nproc, seq_len) if backend == "model" else
                                    f"{spec.name}-{backend}" if impl == "own" else f"{spec.name}-{impl}-{backend}")
        out_dir = out or Path("runs") / study_name
        if backend == "model" and not resume:
            refuse_an_earlier_plan(out_dir)
        hardware = target_hardware
        budget = MemoryBudget.for_hardware(hardware, nproc)
        config = TuneConfig(spec=spec, space=search_space, global_batch=global_batch, seq_len=seq_len,
                            backend=backend, nproc=nproc, trials=trials, out_dir=out_dir, study_name=study_name,
                            storage=storage, resume=resume, seed=seed, timeout_per_trial_s=timeout_per_trial,
                            usable_bytes_per_rank=budget.usable_bytes, fault=fault,
                            memory_cap_bytes_per_rank=budget.cap_bytes(backend),
                            confirm_rounds=confirm_rounds, launcher=launcher,
                            hostfile=str(hostfile) if hostfile else None, script=workload,
                            numerics_gate=workload is None, impl=impl, hf_config=hf_config)
        not_measured = () if backend == "model" else tuple(dropped_choices(search_space, config.trial_space()))
        if backend != "model":
            from autoscale.engine.ops import check_build_locks

            check_build_locks()
        if backend != "model" and workload is None:
            cls._refuse_trials_past_the_timeout(config, hardware)
        check_writable(out_dir)
        from autoscale.engine.slurm import parse_slurm_args

        return cls(config, cls._run_info(config, hardware, command), hardware, workers=workers,
                   slurm_args=parse_slurm_args(slurm_args), not_measured=not_measured, notes=notes,
                   layout_target=layout_target)

    @classmethod
    def for_worker(cls, *, storage: str, study_name: str, out: Path | None, command: list[str]) -> "TuneSession":
        """Join a study started elsewhere: its settings come from the study itself."""
        from autoscale.hardware import detect
        from autoscale.study import RUN_ATTR, open_study

        study = open_study(storage=storage, study_name=study_name, resume=True, must_exist=True)
        settings = study.user_attrs.get(RUN_ATTR)
        if settings is None:
            raise UserError(f"study {study_name!r} was not started by autoscale tune (it has no {RUN_ATTR!r})")
        backend = resolve_backend(settings["backend"])
        hardware = detect(backend)
        budget = MemoryBudget.for_hardware(hardware, settings["nproc"])
        out_dir = out or Path("runs") / study_name / f"worker-{socket.gethostname()}-{os.getpid()}"
        check_writable(out_dir)
        config = TuneConfig.from_settings(settings, out_dir=out_dir, study_name=study_name, storage=storage,
                                          resume=True, confirm_rounds=0,  # the study's starter confirms
                                          launcher="fresh" if settings.get("script") else "warm",  # scripts: fresh
                                          usable_bytes_per_rank=budget.usable_bytes,
                                          memory_cap_bytes_per_rank=budget.cap_bytes(backend))
        return cls(config, cls._run_info(config, hardware, command), hardware,
                   not_measured=tuple(dropped_choices(config.space, config.trial_space())))

    @staticmethod
    def _refuse_trials_past_the_timeout(config: TuneConfig, hardware) -> None:
        from autoscale.costmodel import point_predictor
        from autoscale.trial_time import refuse_trials_past_the_timeout

        points = config.trial_space().points(global_batch=config.global_batch, world_size=config.nproc, spec=config.spec)
        predictor = point_predictor(config.spec, hardware, world_size=config.nproc, seq_len=config.seq_len,
                                    warm_ranks=config.launcher == "warm")
        refuse_trials_past_the_timeout(points, predictor, measure=config.measure, timeout_s=config.timeout_per_trial_s,
                                       global_batch=config.global_batch)

    @staticmethod
    def _run_info(config: TuneConfig, hardware, command: list[str]) -> RunInfo:
        spec, script = config.spec, config.script
        model = ({"name": script.name, "params": None, "train_flops_per_token": None} if script else
                 {"name": spec.name, "params": spec.param_count(),
                  "train_flops_per_token": spec.train_flops_per_token(config.seq_len), "impl": config.impl})
        return RunInfo(study_name=config.study_name, model=model, workload=script.describe() if script else None,
                       backend=config.backend, world_size=config.nproc, global_batch=config.global_batch,
                       seq_len=config.seq_len,
                       hardware={"name": hardware.name, "description": hardware.description,
                                 "memory_bytes": hardware.memory_bytes, "peak_tflops": hardware.peak_tflops,
                                 "gpus_per_node": hardware.gpus_per_node},
                       device_bytes_per_rank=MemoryBudget.for_hardware(hardware, config.nproc).device_bytes,
                       usable_bytes_per_rank=config.usable_bytes_per_rank, command=list(command),
                       memory_cap=None if script else memory_cap_record(config.memory_cap_bytes_per_rank),  # a script's ranks run uncapped
                       storage=config.storage_url, started_at=utc_now())

    def headline(self) -> str:
        c = self.config
        where = (f"PREDICTED by the cost model for {c.nproc} x {self.hardware.name}, the layouts "
                 f"{self.layout_target.engine} runs (--target)" if c.backend == "model"
                 else f"{c.trials} trials on {c.nproc} {c.backend} rank(s)")
        model = c.spec.name + (" (transformers)" if c.impl == "transformers" else "")
        what = (f"script {shlex.join([c.script.path, *c.script.args])}" if c.script else
                f"{model} ({c.spec.param_count() / 1e6:,.1f}M params)")
        tokens = f" x {c.seq_len} tokens" if c.seq_len else " sequences"
        line = (f"tuning {what}, {where}: global batch {c.global_batch}{tokens}, space {c.space.name!r} -> "
                f"{c.out_dir}")
        line += "".join(f"\n{note}" for note in self.notes)
        if c.backend == "model":
            from autoscale.costmodel.params import calibration_in_use

            line += f"\n{calibration_in_use(self.hardware.name)}"
        if self.not_measured:
            line += (f"\nnot measured on {c.backend} (unavailable or cannot make the global batch): "
                     f"{', '.join(self.not_measured)}")
        return line

    def predictor(self):
        """The cost model for this run's hardware, calibrated where `autoscale calibrate` has been run."""
        from autoscale.costmodel import point_predictor

        c = self.config
        return point_predictor(c.spec, self.hardware, world_size=c.nproc, seq_len=c.seq_len,
                               warm_ranks=c.launcher == "warm")

    def run(self, observer: Observer | None = None) -> TuneOutcome:
        c = self.config
        if c.backend == "model":
            from autoscale.planning import plan

            records, summary = plan(spec=c.spec, space=c.space, hardware=self.hardware, gpus=c.nproc,
                                    global_batch=c.global_batch, seq_len=c.seq_len, info=self.info, out_dir=c.out_dir,
                                    target=self.layout_target)
            evaluated = summary["evaluated"]
            stopped = f"every point predicted ({evaluated['points']} points)"
            if evaluated["skipped_by_rule"]:
                stopped += f"; layouts skipped by rule: {describe_skipped(Counter(evaluated['skipped_by_rule']))}"
            if evaluated.get("fp16_same_as_bf16"):
                stopped += f"; {evaluated['fp16_same_as_bf16']} fp16 points predicted as their bf16 twins left out"
            if evaluated["borderline_faster"]:
                stopped += (f"; {evaluated['borderline_faster']} more predicted faster than the best lie past the "
                            "memory margin by less than the model's error: only a trial can tell whether they fit")
            return TuneOutcome(records=records, summary=summary, stopped_because=stopped)
        from autoscale.engine import open_runner

        if self.workers:
            from autoscale.engine.slurm_workers import run_worker_array

            run_worker_array(c, workers=self.workers, slurm_args=self.slurm_args, note=observer.note if observer else None)
            c = replace(c, resume=True)  # the workers measured the trials; this run finishes the study
        with open_runner(c.launcher, run_dir=c.out_dir, backend=c.backend, hostfile=c.hostfile,
                         slurm_args=self.slurm_args, on_fallback=observer.note if observer else None) as runner:
            predictor = None if c.script else self.predictor()  # the cost model knows autoscale's models, not a script's
            return tune(c, info=self.info, observer=observer, run=runner, predictor=predictor)

    def finish(self, outcome: TuneOutcome) -> list[str]:
        """Write the best ds_config and the report; return what to tell the user."""
        lines = []
        best = best_record(outcome.records, self.config.usable_bytes_per_rank, outcome.confirmation)
        refusal = unexpressed(best.point) if best is not None else None
        if best is not None and refusal is None:
            path = self.config.out_dir / "ds_config.json"
            write_ds_config(to_ds_config(best.point, world_size=self.config.nproc), path)
            lines.append(f"wrote {path}")
        elif best is not None:
            target = self.layout_target
            lines.append(f"no ds_config.json: the best point is for {target.engine}, and {refusal}"
                         + (f"; write its files with `autoscale export {self.config.out_dir} --to {target.export}`"
                            if target.export else ""))
        started = time.monotonic()
        lines.append(build_report_or_say_why(self.config.out_dir))
        if (summary_path := self.config.out_dir / "summary.json").exists():
            add_report_time(summary_path, time.monotonic() - started)
        return lines


def plan_name(model: str, hardware, gpus: int, seq_len: int) -> str:
    """A plan's default study (and folder) name: model, hardware, GPU count and sequence length, so
    plans of one model for other clusters never share a folder."""
    return f"{model}-{hardware.name}-{gpus}gpu-seq{seq_len}"


def refuse_an_earlier_plan(out_dir: Path) -> None:
    """A plan writes its files without a study to resume, so an earlier one would be overwritten."""
    if (out_dir / "summary.json").exists() or (out_dir / "trials.csv").exists():
        raise UserError(f"{out_dir} already holds a study: pass --resume to plan into it again, or choose "
                        "another --out or --study-name")


def script_workload(script: Path | None, script_args: tuple[str, ...], config_flag: str, *, backend: str,
                    launcher: str, hostfile: Path | None, seq_len: int | None) -> tuple[ScriptWorkload, str, tuple[str, ...]]:
    """`--script` and its arguments as a workload, the launcher that runs it, and what to tell the user.

    A script is started afresh for every trial: the warm launcher's forks hold autoscale's own rank
    loop, not a script's interpreter. Its figures come from the probe, or from DeepSpeed's step timer
    in samples, which --seq-len turns into tokens."""
    if script is None:
        raise UserError(f"arguments {shlex.join(script_args)!r} after -- are for a script: name it with --script")
    if not script.is_file():
        raise UserError(f"--script {str(script)!r}: no such file")
    if backend == "model":
        raise UserError("--script measures a script with real trials: use --backend cpu or cuda, not model")
    if hostfile is not None or launcher not in ("warm", "fresh"):
        raise UserError("--script runs with --launcher fresh (or warm, which runs scripts fresh): "
                        "drop --hostfile or --launcher " + (launcher if hostfile is None else "hostfile"))
    if not config_flag.startswith("-"):
        raise UserError(f"--script-config-flag must be a flag such as --deepspeed_config, got {config_flag!r}")
    notes = ["a script's trials are not checked against a reference run's losses (numerics gate off): "
             "its data are its own"]
    if launcher == "warm":
        notes.insert(0, "--script: every trial starts the script in fresh processes (a script cannot be forked warm)")
    if seq_len is None and not any(word in script.read_text(errors="replace") for word in PROBE_WORDS):
        raise UserError(f"--script {str(script)!r} has no autoscale probe: add `probe.step(tokens=...)` after each "
                        "optimizer step, or pass --seq-len so DeepSpeed's samples/s become tokens/s")
    return (ScriptWorkload(path=str(script.resolve()), args=tuple(script_args), config_flag=config_flag), "fresh",
            tuple(notes))


def check_slurm_flags(*, launcher: str, workers: int, storage: str | None, slurm_args: str | None) -> None:
    """--workers and --slurm-args only mean something to the slurm launcher; workers share a server's study."""
    if slurm_args and launcher != "slurm":
        raise UserError("--slurm-args needs --launcher slurm")
    if workers < 0:
        raise UserError(f"--workers must be 0 or more, got {workers}")
    if workers and launcher != "slurm":
        raise UserError("--workers starts its workers with Slurm: add --launcher slurm")
    if workers and not (storage or "").startswith(("postgresql", "mysql")):
        raise UserError("--workers needs --storage postgresql://... (a server every worker reaches)")


def build_report_or_say_why(run_dir: Path) -> str:
    """The report is a convenience: its failure must not cost the measured results."""
    try:
        from autoscale.reports.build import build_report
    except ImportError:
        return "report: the reports package is not available"
    try:
        return f"wrote {build_report(run_dir)}"
    except Exception as error:  # noqa: BLE001 - results are already saved; say what went wrong
        return f"report not written: {type(error).__name__}: {error}"
