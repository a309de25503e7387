"""The command line: its surface is pinned, and every user mistake is one line with exit code 2."""

import pytest

from autoscale.cli import COMMANDS, app, main
from autoscale.point import KNOBS

OPTIONS = {
    "tune": {"--model", "--trials", "--space", "--global-batch", "--seq-len", "--backend", "--nproc", "--out",
             "--study-name", "--timeout-per-trial", "--storage", "--resume", "--seed", "--hardware", "--gpus",
             "--launcher", "--hostfile", "--confirm-rounds", "--workers", "--slurm-args", "--script",
             "--script-config-flag", "--impl", "--target"},
    "models": set(),
    "estimate": {"--model", "--hardware", "--gpus", "--global-batch", "--seq-len", "--json", "--target",
                 *(knob.flag for knob in KNOBS)},
    "calibrate": {"--out", "--apply", "--reset"},
    "report": {"--out"},
    "compare": {"--out"},
    "export": {"--to", "--out", "--gpus-per-node"},
    "bench": {"--suite", "--baseline", "--save-baseline", "--threshold", "--history", "--junit", "--html",
              "--allow-hardware-mismatch", "--workdir", "--test-sleep-per-step", "--against", "--nice"},
    "worker": {"--storage", "--study-name", "--out"},
}


def options_of(command_name: str) -> set[str]:
    import typer.main

    group = typer.main.get_command(app)
    command = group.commands[command_name]
    return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_subcommands_flags_are_pinned(command):
    assert options_of(command) - {"--help", "--no-resume"} == OPTIONS[command]


def test_every_subcommand_is_pinned():
    import typer.main

    assert set(typer.main.get_command(app).commands) == set(OPTIONS) >= set(COMMANDS)


def test_estimate_has_a_flag_for_every_knob_and_the_same_defaults_as_tune(capsys):
    assert main(["estimate", "--model", "gpt-tiny", "--hardware", "cpu", "--gpus", "2", "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["seq_len"] == 128 and result["global_batch"] == 16  # tune's: min(max, 1024), 8 per rank


def test_models_lists_every_preset(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("gpt-tiny", "gpt-1.3b", "gpt-13b", "llama-7b"):
        assert name in out


@pytest.mark.parametrize("argv, message", [
    (["tune", "--model", "gpt-5"], "unknown model 'gpt-5'"),
    (["tune", "--backend", "tpu"], "Invalid value for '--backend'"),
    (["tune", "--backend", "model"], "--backend model plans for a cluster: name it with --hardware"),
    (["tune", "--backend", "model", "--hardware", "tpu-v9"], "unknown hardware 'tpu-v9'"),
    (["tune", "--backend", "cpu", "--gpus", "8"], "use them with --backend model"),
    (["tune", "--trials", "0"], "--trials"),
    (["tune", "--trials", "many"], "Invalid value for '--trials'"),
    (["tune", "--space", "nope"], "search space 'nope' not found"),
    (["tune", "--space", "zero-only", "--global-batch", "3", "--backend", "cpu"], "can be laid out for global batch 3"),
    (["tune", "--seq-len", "4096", "--backend", "cpu"], "--seq-len 4096 is outside 1..128, gpt-tiny's maximum"),
    (["tune", "--out", "/proc/autoscale-run", "--backend", "cpu"], "cannot write to --out"),
    (["tune", "--bogus"], "No such option: --bogus"),
    (["tune", "--backend", "cpu", "--workers", "2"], "--workers starts its workers with Slurm: add --launcher slurm"),
    (["tune", "--backend", "cpu", "--launcher", "slurm", "--workers", "2"], "--workers needs --storage postgresql://"),
    (["tune", "--backend", "cpu", "--slurm-args=--partition=gpu"], "--slurm-args needs --launcher slurm"),
    (["tune", "--backend", "cpu", "--launcher", "slurm", "--slurm-args", "sleep 1"], "--slurm-args 'sleep 1': expected"),
    (["tune", "--impl", "jax"], "Invalid value for '--impl'"),
    (["tune", "--impl", "transformers", "--backend", "cpu"], "not the preset 'gpt-tiny'"),
    (["nonsense"], "No such command 'nonsense'"),
])
def test_user_mistakes_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_near_miss_of_a_model_or_hardware_name_gets_a_suggestion(capsys):
    assert main(["tune", "--model", "gpt-1.3"]) == 2
    assert "(did you mean 'gpt-1.3b'?)" in capsys.readouterr().err
    assert main(["estimate", "--model", "gpt-tiny", "--hardware", "h100-sx"]) == 2
    assert "(did you mean 'h100-sxm'?)" in capsys.readouterr().err


def test_library_notices_stay_out_of_the_console(tmp_path):
    """DeepSpeed's "Setting accelerator to CPU" (export checks the ds_config) and Optuna's "A new study
    created" (the report ranks knobs) are not autoscale's to print; a fresh process shows either."""
    import json
    import subprocess
    import sys

    import optuna

    from autoscale.ds_config import to_ds_config
    from autoscale.point import Point

    run = tmp_path / "run"
    run.mkdir()
    point = Point(zero_stage=1, micro_batch=1, grad_accum=4)
    (run / "ds_config.json").write_text(json.dumps(to_ds_config(point, world_size=2)))
    (run / "summary.json").write_text(json.dumps({
        "study_name": "s", "model": {"name": "gpt-tiny"}, "world_size": 2, "seq_len": 128, "backend": "cpu",
        "best": {"trial_number": 0, "point": point.as_dict(), "metrics": {"tokens_per_s": 10.0}}}))
    (run / "trials.csv").write_text("number,zero_stage,micro_batch,grad_accum,tokens_per_s,peak_bytes,status\n"
                                    + "".join(f"{i},{i % 2},1,4,{10 + i},{2**20},ok\n" for i in range(4)))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{run / 'study.db'}", direction="maximize")
    zero = optuna.distributions.CategoricalDistribution([0, 1])
    for i in range(4):
        study.add_trial(optuna.trial.create_trial(params={"zero_stage": i % 2}, value=10.0 + i,
                                                  distributions={"zero_stage": zero}))
    script = "import sys; from autoscale.cli import main; sys.exit(main(sys.argv[1:]))"
    for argv in (["export", str(run), "--to", "deepspeed"], ["report", str(run)]):
        done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        console = done.stdout + done.stderr
        assert "Setting accelerator" not in console and "A new study created" not in console, console
        assert "wrote" in console
