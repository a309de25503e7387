"""The published GPU runs as the cost model reads them, and the leave-one-source-out machinery."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from autoscale.costmodel import gpu_fit
from autoscale.costmodel.gpu_runs import SOURCES, load_published_runs
from autoscale.costmodel.params import GPU_FAMILY_DEFAULTS

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
GPU_DATA = DATA / "gpu"


@pytest.fixture(scope="module")
def runs():
    return load_published_runs(GPU_DATA, DATA / "published_runs.csv")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_loader_reads_every_row_once(runs):
    published = [row for row in _rows(GPU_DATA / "published_gpu_runs.csv") if "llm-foundry" not in row["source"]]
    foundry = [row for row in _rows(GPU_DATA / "llmfoundry_all.csv") if row["Activation CPUOffload"] != "True"]
    megatron = _rows(DATA / "published_runs.csv")
    assert len(runs) == len(published) + len(foundry) + len(megatron)
    assert {run.source for run in runs} == set(SOURCES)
    assert all(run.measured_tokens_per_s_per_gpu > 0 for run in runs)


def test_only_the_arithmetic_refuses_a_published_layout_and_says_why(runs):
    # BLOOM's pp 72 on 70 layers: Megatron-DeepSpeed gives its embeddings stages of their own,
    # which a ModelSpec's layers do not count
    refused = [(run.label, run.refusals[0]) for run in runs if not run.candidates]
    assert [label for label, _ in refused] == ["BLOOM-176B 288g tp1 pp72 cp1"]
    assert "pp 72 exceeds the 70 layers" in refused[0][1]


def test_each_run_keeps_its_published_layout_under_its_engine(runs):
    titan_3d = [run for run in runs if run.source == "torchtitan" and "tp8 pp8" in run.label]
    assert titan_3d and all(p.zero_stage == 3 and p.pp == 8 for run in titan_3d for p in run.candidates)
    bloom = [run for run in runs if run.source == "bloom" and run.candidates]
    assert any(p.tp > 1 and p.pp > 1 for run in bloom for p in run.candidates)


def test_every_candidate_lays_the_run_out_on_its_gpu_count(runs):
    for run in runs:
        for point in run.candidates:
            assert point.data_parallel(run.world_size) * point.tp * point.pp * point.cp == run.world_size, run.label


def test_every_llm_foundry_run_is_predicted_to_fit(runs):
    foundry = [run for run in runs if run.source == "llm-foundry"]
    refused = [run.label for run in foundry
               if not gpu_fit.predict_run(run, GPU_FAMILY_DEFAULTS[run.hardware.family]).fits]
    assert refused == []


def test_leave_one_source_out_never_fits_on_the_source_it_scores(runs, monkeypatch):
    subset = [run for source in SOURCES for run in [r for r in runs if r.source == source][:2]]
    seen = []

    def recording_fit(training):
        seen.append({run.source for run in training})
        return {}

    monkeypatch.setattr(gpu_fit, "fit_families", recording_fit)
    predictions, used = gpu_fit.leave_one_source_out(subset)
    assert sorted(used) == sorted(SOURCES) and len(predictions) == len(subset)
    assert [set(SOURCES) - trained for trained in seen] == [{source} for source in sorted(SOURCES)]


def test_a_fit_recovers_the_efficiency_that_generated_its_runs(runs):
    from dataclasses import replace

    a100 = [run for run in runs if run.source == "llm-foundry" and run.hardware.family == "a100"][:12]
    truth = replace(GPU_FAMILY_DEFAULTS["a100"], gemm_efficiency_max=0.5)
    synthetic = [replace(run, measured_tokens_per_s_per_gpu=gpu_fit.predict_run(run, truth).tokens_per_s_per_gpu)
                 for run in a100]
    fitted = gpu_fit.fit_family(synthetic, start=GPU_FAMILY_DEFAULTS["a100"])
    assert max(abs(gpu_fit.predict_run(run, fitted).error) for run in synthetic) < 0.01


def test_validate_gpu_reports_to_its_end_naming_each_run_predicted_not_to_fit(capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "validate_gpu.py"
    spec = importlib.util.spec_from_file_location("validate_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([]) == 0
    out = capsys.readouterr().out
    assert "== goals ==" in out and "each source weighing the same" in out
    not_fit = [line for line in out.splitlines() if line.startswith("  predicted not to fit:")]
    assert all("GiB usable" in line for line in not_fit)


def test_every_published_gpu_row_is_read_with_its_engine(runs):
    from autoscale.costmodel.gpu_runs import published_gpu_table

    table = published_gpu_table(GPU_DATA / "published_gpu_runs.csv")
    assert len(table) == len(_rows(GPU_DATA / "published_gpu_runs.csv"))
    assert {run.target.name for run in table} == {"megatron", "megatron-deepspeed", "torchtitan", "composer"}
