"""A user's script as the trial workload (`autoscale tune --script`): the examples measured on 2 CPU
ranks, a failing script recorded with its own last words, and knobs a script cannot apply refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from autoscale.cli import main
from autoscale.engine import TrialRequest, run_trial
from autoscale.models import PRESETS
from autoscale.point import Point
from autoscale.session import TuneSession
from autoscale.tuner import SilentObserver
from autoscale.workload import ScriptWorkload

ROOT = Path(__file__).resolve().parents[1]
LOOP = ROOT / "examples" / "deepspeed_loop.py"
HF_TRAINER = ROOT / "examples" / "hf_trainer.py"


def script_request(tmp_path, script: Path, *args: str, config_flag: str = "--deepspeed_config",
                   seq_len: int | None = None, **knobs) -> TrialRequest:
    return TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(**knobs), seq_len=seq_len, backend="cpu", nproc=2,
                        workdir=tmp_path / "trial", timeout_s=240,
                        script=ScriptWorkload(path=str(script), args=args, config_flag=config_flag))


@pytest.mark.slow
@pytest.mark.parametrize("measured_by", ["probe", "deepspeed"])
def test_the_deepspeed_loop_example_is_measured_on_two_ranks(tmp_path, measured_by):
    no_probe = ("--no-probe",) if measured_by == "deepspeed" else ()
    result = run_trial(script_request(tmp_path, LOOP, *no_probe, "--steps", "8", seq_len=64,
                                      zero_stage=1, micro_batch=2, grad_accum=4))
    assert result.ok, result.reason
    assert result.tokens_per_s > 0 and result.steps >= 2
    assert result.peak_bytes > 0 and all(peak > 0 for peak in result.peak_bytes_per_rank)
    assert len(result.peak_bytes_per_rank) == (2 if measured_by == "probe" else 1)  # DeepSpeed's log: rank 0's
    config = json.loads((tmp_path / "trial" / "ds_config.json").read_text())
    assert config["zero_optimization"]["stage"] == 1 and config["train_micro_batch_size_per_gpu"] == 2


@pytest.mark.nightly
@pytest.mark.slow
def test_the_hf_trainer_example_is_measured_through_its_callback(tmp_path):
    result = run_trial(script_request(tmp_path, HF_TRAINER, "--steps", "6", config_flag="--deepspeed",
                                      zero_stage=2, micro_batch=2, grad_accum=4, precision="bf16"))
    assert result.ok, result.reason
    assert result.tokens_per_s > 0 and len(result.peak_bytes_per_rank) == 2


def test_a_script_study_does_not_claim_a_memory_cap_its_ranks_do_not_have(tmp_path):
    """The cap is set inside autoscale's own ranks after the process group forms (engine.memcap); a
    script's ranks run uncapped, and summary.json says so rather than recording a cap."""
    session = TuneSession.from_flags(
        model="gpt-tiny", trials=1, space="script", global_batch=8, seq_len=64, backend="cpu", nproc=2,
        out=tmp_path / "run", study_name=None, timeout_per_trial=60, storage=None, resume=False, seed=0,
        command=["test"], launcher="fresh", script=LOOP, script_args=())
    assert session.info.memory_cap is None


@pytest.mark.nightly
@pytest.mark.slow
def test_a_failing_script_is_a_failed_trial_with_its_last_log_line_and_the_study_goes_on(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("zero_stage: [0, 1]\nmicro_batch: [4]\n")
    session = TuneSession.from_flags(
        model="gpt-tiny", trials=2, space=str(space), global_batch=8, seq_len=64, backend="cpu", nproc=2,
        out=tmp_path / "run", study_name=None, timeout_per_trial=240, storage=None, resume=False, seed=0,
        command=["test"], launcher="fresh", confirm_rounds=0, script=ROOT / "tests" / "scripts" / "refuses_zero1.py",
        script_args=("--steps", "6"))
    outcome = session.run(observer=SilentObserver())
    by_stage = {r.point.zero_stage: r for r in outcome.records}
    assert by_stage[1].status == "failed"
    assert by_stage[1].reason.endswith("exited with code 1: this script cannot run ZeRO-1")
    assert by_stage[0].status == "ok" and by_stage[0].result.tokens_per_s > 0
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert set(trials["workload"]) == {str(ROOT / "tests" / "scripts" / "refuses_zero1.py")}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["workload"]["script"].endswith("refuses_zero1.py")
    assert summary["workload"]["numerics_gate"].startswith("off")


@pytest.mark.parametrize("space, knob", [("default", "checkpointing"), ("parallel", "tp")])
def test_a_knob_a_script_cannot_apply_is_refused_by_name(capsys, tmp_path, space, knob):
    assert main(["tune", "--script", str(LOOP), "--space", space, "--backend", "cpu",
                 "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"a --script trial cannot apply {knob}" in error and f"remove the {knob} key" in error


@pytest.mark.parametrize("argv, message", [
    (["--", "--steps", "3"], "after -- are for a script: name it with --script"),
    (["--script", "no/such/train.py"], "--script 'no/such/train.py': no such file"),
    (["--script", str(LOOP), "--launcher", "slurm"], "--script runs with --launcher fresh"),
    (["--script", str(ROOT / "tests" / "scripts" / "refuses_zero1.py")], "has no autoscale probe"),
])
def test_script_flag_mistakes_are_one_line_and_exit_2(capsys, tmp_path, argv, message):
    assert main(["tune", "--backend", "cpu", "--out", str(tmp_path / "run"), *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error
