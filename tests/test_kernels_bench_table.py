"""The benchmark table computes speedup and memory ratio against torch eager, and marks unmeasured sets."""

from autoscale.kernels.bench.table import format_table, rows


def _bench(impl: str, median_s: float, peak_mb: float | None) -> dict:
    return {"stats": {"median": median_s, "q1": median_s * 0.9, "q3": median_s * 1.1},
            "extra_info": {"kernel": "rms_norm", "shape": "tokens=4 hidden=8", "impl": impl, "peak_mb": peak_mb,
                           "device": "GPU X", "dtype": "bfloat16", "torch_version": "2", "triton_version": "3",
                           "timestamp": "2026-01-01T00:00:00+00:00"}}


REPORT = {"benchmarks": [_bench("torch", 0.004, 400.0), _bench("triton", 0.002, 100.0)]}


def test_rows_give_speedup_and_memory_ratio_relative_to_torch_and_empty_rows_for_missing_sets():
    by_impl = {row.impl: row for row in rows(REPORT)}
    assert by_impl["triton"].p50_ms == 2.0
    assert by_impl["triton"].speedup_vs_torch == 2.0
    assert by_impl["triton"].memory_ratio_vs_torch == 4.0
    assert by_impl["torch"].speedup_vs_torch == 1.0
    assert by_impl["compile"].p50_ms is None


def test_table_names_the_device_and_marks_unmeasured_sets():
    text = format_table(rows(REPORT), REPORT)
    assert "GPU X, bfloat16" in text
    assert "| rms_norm | tokens=4 hidden=8 | triton | 2.000 | 1.800-2.200 | 100.0 | 2.00x | 4.00x |" in text
    assert "| rms_norm | tokens=4 hidden=8 | compile | not measured |" in text


def test_ratios_are_unknown_without_peak_memory():
    report = {"benchmarks": [_bench("torch", 0.004, None), _bench("triton", 0.002, None)]}
    triton_row = next(row for row in rows(report) if row.impl == "triton")
    assert triton_row.memory_ratio_vs_torch is None and triton_row.speedup_vs_torch == 2.0
