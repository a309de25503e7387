"""Every mistake a user can make with `autoscale tune` is one line on stderr and exit code 2, never
a traceback; and a failing command leaves an existing run folder byte for byte as it was.

The table of cases is the one in docs/bad-inputs.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from autoscale.cli import main

UNREACHABLE_PG = "postgresql://tuner:s3cret%40pw@127.0.0.1:1/studies"  # port 1: nothing listens
CPU = ["--backend", "cpu"]

# (id, argv with {d} for the folder of bad files, what the one line must say)
CASES = [
    ("unknown-model", ["tune", "--model", "gpt-5"], "unknown model 'gpt-5': choose one of"),
    ("hf-config-missing", ["tune", "--model", "{d}/nowhere/config.json"], "does not exist"),
    ("hf-config-not-json", ["tune", "--model", "{d}/broken.json"], "is not valid JSON"),
    ("hf-config-not-object", ["tune", "--model", "{d}/list.json"], "must hold a JSON object"),
    ("hf-config-is-directory", ["tune", "--model", "{d}/folder.json"], "is a directory: give the config.json"),
    ("hf-config-missing-keys", ["tune", "--model", "{d}/llama-partial/config.json"], "lacks 'num_hidden_layers'"),
    ("hf-config-unknown-family", ["tune", "--model", "{d}/t5.json"], "unsupported Hugging Face model_type 't5'"),
    ("hf-config-wrong-type", ["tune", "--model", "{d}/typo.json", *CPU], "model 'typo': n_layers must be a positive integer, got 'two'"),
    ("hf-config-negative", ["tune", "--model", "{d}/negative.json", *CPU], "model 'negative': n_layers must be a positive integer, got -2"),
    ("hf-config-heads", ["tune", "--model", "{d}/heads.json", *CPU], "model 'heads': hidden 65 is not divisible by n_heads 4"),
    ("space-not-found", ["tune", "--space", "nope"], "search space 'nope' not found"),
    ("space-unknown-key", ["tune", "--space", "{d}/unknown-key.yaml"], "warp_speed: Extra inputs are not permitted"),
    ("space-wrong-type", ["tune", "--space", "{d}/wrong-type.yaml"], "micro_batch.0: Input should be a valid integer"),
    ("space-scalar", ["tune", "--space", "{d}/scalar.yaml"], "micro_batch: Input should be a valid list"),
    ("space-empty-choices", ["tune", "--space", "{d}/empty-choices.yaml"], "micro_batch: List should have at least 1 item"),
    ("space-negative", ["tune", "--space", "{d}/negative.yaml"], "micro_batch.0: Input should be greater than 0"),
    ("space-bad-stage", ["tune", "--space", "{d}/stage4.yaml"], "zero_stage.0: Input should be 0, 1, 2 or 3"),
    ("space-unknown-kernels", ["tune", "--space", "{d}/kernels.yaml"], "unknown kernel set 'warp-drive'"),
    ("space-not-yaml", ["tune", "--space", "{d}/broken.yaml"], "is not valid YAML"),
    ("space-empty-file", ["tune", "--space", "{d}/empty.yaml"], "must be a mapping of knob to list of choices"),
    ("space-binary", ["tune", "--space", "{d}/binary.yaml"], "is not a text file"),
    ("space-is-directory", ["tune", "--space", "{d}/folder.yaml"], "is a directory, not a file"),
    ("trials-zero", ["tune", "--trials", "0"], "Invalid value for '--trials'"),
    ("trials-negative", ["tune", "--trials", "-3"], "Invalid value for '--trials'"),
    ("trials-not-a-number", ["tune", "--trials", "many"], "Invalid value for '--trials'"),
    ("global-batch-zero", ["tune", "--global-batch", "0"], "Invalid value for '--global-batch'"),
    ("seq-len-zero", ["tune", "--seq-len", "0"], "Invalid value for '--seq-len'"),
    ("nproc-zero", ["tune", "--nproc", "0"], "Invalid value for '--nproc'"),
    ("timeout-zero", ["tune", "--timeout-per-trial", "0"], "Invalid value for '--timeout-per-trial'"),
    ("seq-len-too-long", ["tune", "--seq-len", "4096", *CPU], "--seq-len 4096 is outside 1..128, gpt-tiny's maximum"),
    ("global-batch-not-divisible", ["tune", "--space", "zero-only", "--global-batch", "3", *CPU, "--out", "{d}/gb"],
     "no point of space 'zero-only' can be laid out for global batch 3 on 2 ranks"),
    ("bad-backend", ["tune", "--backend", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'cuda', 'model'"),
    ("model-backend-without-hardware", ["tune", "--backend", "model"], "name it with --hardware"),
    ("gpus-without-model-backend", ["tune", *CPU, "--gpus", "8"], "use them with --backend model"),
    ("unknown-hardware", ["tune", "--backend", "model", "--hardware", "tpu-v9"], "unknown hardware 'tpu-v9'"),
    ("hardware-file-missing", ["tune", "--backend", "model", "--hardware", "{d}/nohw.yaml"], "does not exist"),
    ("hardware-file-bad-field", ["tune", "--backend", "model", "--hardware", "{d}/hw-scalar-peak.yaml"],
     "peak_tflops must map precisions to TFLOP/s"),
    ("hardware-file-negative", ["tune", "--backend", "model", "--hardware", "{d}/hw-negative.yaml"],
     "memory_gb must not be negative"),
    ("hardware-file-is-directory", ["tune", "--backend", "model", "--hardware", "{d}/folder.yaml"],
     "is a directory, not a file"),
    ("out-unwritable", ["tune", *CPU, "--out", "/proc/autoscale-run"], "cannot write to --out '/proc/autoscale-run'"),
    ("out-under-a-file", ["tune", *CPU, "--out", "{d}/a-file/run"], "Not a directory"),
    ("out-is-a-file", ["tune", *CPU, "--out", "{d}/a-file"], "cannot write to --out"),
    ("storage-unreachable", ["tune", *CPU, "--storage", UNREACHABLE_PG, "--out", "{d}/pg"],
     "cannot open storage postgresql://tuner:***@127.0.0.1:1/studies"),
    ("storage-not-a-url", ["tune", *CPU, "--storage", "nonsense", "--out", "{d}/url"], "cannot open storage nonsense"),
    ("storage-corrupt-sqlite", ["tune", *CPU, "--storage", "sqlite:///{d}/garbage.db", "--out", "{d}/g1"],
     "file is not a database"),
    ("resume-corrupt-study-db", ["tune", *CPU, "--out", "{d}/corrupt-run", "--resume"], "file is not a database"),
    ("resume-missing-study", ["tune", *CPU, "--out", "{d}/fresh", "--resume"], "no study 'gpt-tiny-cpu'"),
    ("hardware-near-miss", ["tune", "--backend", "model", "--hardware", "H100SXM", "--gpus", "8"],
     "unknown hardware 'H100SXM' (did you mean 'h100-sxm'?)"),
    ("model-backend-without-gpus", ["tune", "--backend", "model", "--hardware", "H100-SXM"],
     "give --gpus (e.g. --gpus 8, one node of h100-sxm)"),
    ("plan-into-an-earlier-plan", ["tune", "--backend", "model", "--hardware", "h100-sxm", "--gpus", "8",
                                   "--out", "{d}/plan"], "already holds a study: pass --resume"),
    ("every-trial-past-the-timeout", ["tune", *CPU, "--global-batch", "3125000", "--out", "{d}/huge"],
     "every trial is predicted past --timeout-per-trial 300 s"),
    ("trial-past-a-short-timeout", ["tune", *CPU, "--model", "gpt-125m", "--global-batch", "64",
                                    "--timeout-per-trial", "5", "--out", "{d}/slow"],
     "every trial is predicted past --timeout-per-trial 5 s"),
    ("export-out-unwritable", ["export", "{d}/run", "--to", "deepspeed", "--out", "/proc/autoscale-export"],
     "cannot write to --out '/proc/autoscale-export'"),
    ("export-out-is-a-file", ["export", "{d}/run", "--to", "deepspeed", "--out", "{d}/a-file"],
     "is a file: give a folder for the exported files"),
    ("export-nodes-not-filled", ["export", "{d}/run", "--to", "deepspeed", "--gpus-per-node", "3"],
     "4 ranks do not fill nodes of 3 GPUs"),
    ("report-out-unwritable", ["report", "{d}/run", "--out", "/proc/autoscale/report.html"],
     "cannot write to --out '/proc/autoscale/report.html'"),
    ("compare-out-unwritable", ["compare", "{d}/run", "{d}/run", "--out", "/proc/autoscale/compare.html"],
     "cannot write to --out '/proc/autoscale/compare.html'"),
    ("compare-different-models", ["compare", "{d}/run", "{d}/run-125m", "--out", "{d}/c.html"],
     "their tokens/s measure different models"),
    ("calibrate-out-unwritable", ["calibrate", "{d}/run", "--out", "/proc/autoscale/calibration.yaml"],
     "cannot write to --out '/proc/autoscale/calibration.yaml'"),
    ("calibrate-a-plan", ["calibrate", "{d}/plan"], "is a plan (tune --backend model)"),
    ("calibrate-apply-other-hardware", ["calibrate", "{d}/run", "--apply", "h100-sxm"], "can only apply to cpu"),
    ("calibrate-nothing", ["calibrate"], "give a run folder to calibrate on"),
    ("unknown-flag", ["tune", "--bogus"], "No such option: --bogus"),
    ("unknown-command", ["nonsense"], "No such command 'nonsense'"),
]


def write_bad_inputs(folder: Path) -> None:
    """Every bad file the cases name."""
    gpt2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 128, "n_positions": 64}
    files = {
        "broken.json": "{not json", "list.json": "[1, 2]", "t5.json": json.dumps({"model_type": "t5"}),
        "llama-partial/config.json": json.dumps({"model_type": "llama", "hidden_size": 64}),
        "typo.json": json.dumps({**gpt2, "n_layer": "two"}), "negative.json": json.dumps({**gpt2, "n_layer": -2}),
        "heads.json": json.dumps({**gpt2, "n_embd": 65}),
        "unknown-key.yaml": "zero_stage: [0]\nwarp_speed: [9]\n", "wrong-type.yaml": "micro_batch: [one]\n",
        "scalar.yaml": "micro_batch: 2\n", "empty-choices.yaml": "micro_batch: []\n",
        "negative.yaml": "micro_batch: [-2]\n", "stage4.yaml": "zero_stage: [4]\n",
        "kernels.yaml": "kernels: [warp-drive]\n", "broken.yaml": "micro_batch: [1\n", "empty.yaml": "",
        "hw-scalar-peak.yaml": "x:\n  peak_tflops: 3\n",
        "hw-negative.yaml": ("x:\n  peak_tflops: {fp32: 10}\n  memory_gb: -80\n  memory_bandwidth_gb_s: 1\n"
                             "  intra_node_gb_s: 1\n  inter_node_gb_s: 1\n"),
        "a-file": "not a folder",
    }
    files.update(run_folder_files("run", model="gpt-tiny"))
    files.update(run_folder_files("run-125m", model="gpt-125m"))
    files.update({"plan/summary.json": json.dumps({"study_name": "p", "predicted": True, "model": {"name": "gpt-125m"}}),
                  "plan/trials.csv": "number,status\n"})
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage\x80")
    (folder / "folder.json").mkdir()
    (folder / "folder.yaml").mkdir()
    garbage = os.urandom(8192)
    (folder / "garbage.db").write_bytes(garbage)
    (folder / "corrupt-run").mkdir()
    (folder / "corrupt-run" / "study.db").write_bytes(garbage)


def run_folder_files(name: str, *, model: str) -> dict[str, str]:
    """A measured CPU study of 4 ranks, reduced to what export, report, compare and calibrate read."""
    from autoscale.ds_config import to_ds_config
    from autoscale.point import Point

    point = Point(zero_stage=1, micro_batch=1, grad_accum=2)
    rows = "".join(f"{i},{stage},1,2,{100.0 + 10 * i},{(300 + 20 * i) * 2**20},ok\n" for i, stage in enumerate((0, 1, 2)))
    return {
        f"{name}/ds_config.json": json.dumps(to_ds_config(point, world_size=4)),
        f"{name}/summary.json": json.dumps({
            "study_name": name, "model": {"name": model}, "hardware": {"name": "cpu"}, "backend": "cpu",
            "world_size": 4, "seq_len": 128, "best": {"trial_number": 0, "point": point.as_dict(), "metrics": {}}}),
        f"{name}/trials.csv": "number,zero_stage,micro_batch,grad_accum,tokens_per_s,peak_bytes,status\n" + rows,
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def assert_one_clear_line(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("autoscale: error: ") and message in err, err


@pytest.mark.parametrize("argv, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    write_bad_inputs(tmp_path)
    code, err = run_cli([arg.format(d=tmp_path) for arg in argv], capsys)
    assert_one_clear_line(code, err, message)
    assert "s3cret" not in err and "%40pw" not in err


def test_a_password_with_a_raw_at_sign_is_not_leaked(tmp_path, monkeypatch, capsys):
    pytest.importorskip("psycopg")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["tune", *CPU, "--storage", "postgresql://tuner:s3cret@pw@127.0.0.1:1/studies"], capsys)
    assert_one_clear_line(code, err, "postgresql://tuner:***@127.0.0.1:1/studies")
    assert "s3cret" not in err and "pw" not in err


def test_there_are_at_least_15_distinct_cases():
    assert len({case[0] for case in CASES}) == len(CASES) >= 15


# -- nothing measured is lost -------------------------------------------------------------------

STUDY = "kept"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run folder as a finished run leaves it: a study holding one completed trial, and its files."""
    import optuna

    out = tmp_path / "runs" / STUDY
    out.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{out / 'study.db'}", direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"zero_stage": 0}, value=1234.5,
                                              distributions={"zero_stage": optuna.distributions.CategoricalDistribution([0, 1])}))
    (out / "trials.csv").write_text("number,zero_stage,micro_batch,tokens_per_s,status\n0,0,1,1234.5,ok\n")
    (out / "summary.json").write_text(json.dumps({"study_name": STUDY, "best": {"trial_number": 0}}, indent=2) + "\n")
    (out / "trials" / "0").mkdir(parents=True)
    (out / "trials" / "0" / "rank0.log").write_text("step 1 loss 10.3\n")
    del study
    return out


AFTER_A_RUN = [
    ("resume-with-unknown-space-key", ["--resume", "--space", "{d}/unknown-key.yaml"], "warp_speed"),
    ("resume-with-space-directory", ["--resume", "--space", "{d}/folder.yaml"], "is a directory"),
    ("resume-with-bad-model", ["--resume", "--model", "{d}/broken.json"], "is not valid JSON"),
    ("resume-with-unreachable-storage", ["--resume", "--storage", UNREACHABLE_PG], "cannot open storage"),
    ("resume-with-corrupt-storage", ["--resume", "--storage", "sqlite:///{d}/garbage.db"], "file is not a database"),
    ("resume-another-study", ["--resume", "--study-name", "other"], "no study 'other'"),
    ("rerun-without-resume", [], f"study '{STUDY}' already exists"),
    ("resume-with-zero-trials", ["--resume", "--trials", "0"], "Invalid value for '--trials'"),
    ("resume-with-impossible-global-batch", ["--resume", "--space", "zero-only", "--global-batch", "3"],
     "can be laid out for global batch 3"),
]


def measured(folder: Path, study_name: str) -> tuple:
    """What a run measured: every file but the study's database, and the study's trials."""
    import optuna

    files = {name: data for name, data in snapshot(folder).items() if name != "study.db"}
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'study.db'}")
    trials = [(t.number, t.state, t.params, t.values, t.user_attrs)
              for t in optuna.load_study(study_name=study_name, storage=storage).trials]
    storage.engine.dispose()
    return files, trials


def fail_in(run_folder: Path, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    argv = ["tune", *CPU, "--out", str(run_folder), "--study-name", STUDY, *extra]
    code, err = run_cli([arg.format(d=tmp_path) for arg in argv], capsys)
    assert_one_clear_line(code, err, message)


@pytest.mark.parametrize("extra, message", [case[1:] for case in AFTER_A_RUN], ids=[case[0] for case in AFTER_A_RUN])
def test_a_failing_command_keeps_every_measured_trial(tmp_path, monkeypatch, capsys, run_folder, extra, message):
    monkeypatch.chdir(tmp_path)
    write_bad_inputs(tmp_path)
    before = measured(run_folder, STUDY)
    fail_in(run_folder, tmp_path, capsys, extra, message)
    assert measured(run_folder, STUDY) == before


@pytest.mark.parametrize("extra, message", [case[1:] for case in AFTER_A_RUN], ids=[case[0] for case in AFTER_A_RUN])
def test_a_failing_command_leaves_the_run_folder_byte_identical(tmp_path, monkeypatch, capsys, run_folder,
                                                                extra, message):
    monkeypatch.chdir(tmp_path)
    write_bad_inputs(tmp_path)
    before = snapshot(run_folder)
    fail_in(run_folder, tmp_path, capsys, extra, message)
    assert snapshot(run_folder) == before


@pytest.mark.slow
def test_a_real_run_survives_every_later_mistake(tmp_path, monkeypatch, capsys):
    """One real trial (the baseline on 2 CPU ranks), then each failing command of the table above."""
    monkeypatch.chdir(tmp_path)
    write_bad_inputs(tmp_path)
    out = tmp_path / "runs" / "real"
    (tmp_path / "baseline-only.yaml").write_text("zero_stage: [0]\nmicro_batch: [1]\n")
    base = ["tune", *CPU, "--out", str(out), "--study-name", "real"]
    assert main([*base, "--trials", "1", "--space", str(tmp_path / "baseline-only.yaml")]) == 0, capsys.readouterr().err
    assert {"trials.csv", "summary.json", "study.db"} <= set(snapshot(out))
    before = snapshot(out)
    kept = measured(out, "real")
    for name, extra, message in AFTER_A_RUN:
        capsys.readouterr()
        code, err = run_cli([arg.format(d=tmp_path) for arg in [*base, *extra]], capsys)
        assert_one_clear_line(code, err, message.replace(STUDY, "real"))
        assert measured(out, "real") == kept, name
        assert snapshot(out) == before, name


def test_a_model_predicted_not_to_fit_here_starts_no_rank_and_says_what_to_try(tmp_path, capfd):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "autoscale.cli", "tune", "--model", "gpt-1.3b", "--backend", "cpu",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2  # before any rank: seconds (the time goal is not a unit test's to check)
    assert len(lines) < 10 and "Traceback" not in done.stderr
    assert "gpt-1.3b does not fit" in lines[-1] and "GiB usable" in lines[-1] and "--backend model" in lines[-1]
    assert not (tmp_path / "run" / "trials").exists() and not (tmp_path / "run" / "pool").exists()
