"""The command line: its surface is pinned, and every user mistake is one line with exit code 2."""

import pytest

from autoscale.cli import app, main

TUNE_OPTIONS = {"--model", "--trials", "--space", "--global-batch", "--seq-len", "--backend", "--nproc", "--out",
                "--study-name", "--timeout-per-trial", "--storage", "--resume", "--seed", "--hardware", "--gpus", "--launcher", "--hostfile"}


def options_of(command_name: str) -> set[str]:
    import typer.main

    group = typer.main.get_command(app)
    command = group.commands[command_name]
    return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


def test_tune_flags_are_pinned():
    assert options_of("tune") - {"--help", "--no-resume"} == TUNE_OPTIONS


def test_models_lists_every_preset(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("gpt-tiny", "gpt-1.3b", "gpt-13b", "llama-7b"):
        assert name in out


@pytest.mark.parametrize("argv, message", [
    (["tune", "--model", "gpt-5"], "unknown model 'gpt-5'"),
    (["tune", "--backend", "tpu"], "--backend must be auto, cpu, cuda or model"),
    (["tune", "--backend", "model"], "--backend model plans for a cluster: name it with --hardware"),
    (["tune", "--backend", "model", "--hardware", "tpu-v9"], "unknown hardware 'tpu-v9'"),
    (["tune", "--backend", "cpu", "--gpus", "8"], "use them with --backend model"),
    (["tune", "--trials", "0"], "--trials"),
    (["tune", "--trials", "many"], "Invalid value for '--trials'"),
    (["tune", "--space", "nope"], "search space 'nope' not found"),
    (["tune", "--space", "zero-only", "--global-batch", "3", "--backend", "cpu"], "global batch 3 is impossible"),
    (["tune", "--seq-len", "4096", "--backend", "cpu"], "exceeds gpt-tiny's maximum of 128"),
    (["tune", "--out", "/proc/autoscale-run", "--backend", "cpu"], "cannot write to --out"),
    (["tune", "--bogus"], "No such option: --bogus"),
    (["nonsense"], "No such command 'nonsense'"),
])
def test_user_mistakes_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
