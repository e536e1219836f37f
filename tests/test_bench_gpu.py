"""The GPU check (exfuse_keras/bench/gpu.py) in its CPU dry run: every part reports, the table's
rows and columns match the JSON, and MFU follows the formula for a known device's peaks."""

import json
import math
import os
import subprocess
import sys

import pytest

from exfuse_keras.bench.gpu import peak_tflops, peaks_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE = "NVIDIA H100 80GB HBM3"


def test_peaks_match_the_most_specific_device_name():
    assert peaks_for("NVIDIA A100-SXM4-80GB")["bf16"] == 312
    assert peaks_for("NVIDIA A10")["bf16"] == 125
    assert peaks_for("NVIDIA A10G") is None and peaks_for("Some CPU") is None
    assert peaks_for("NVIDIA H100 PCIe")["bf16"] == 756 and peaks_for("NVIDIA H200")["bf16"] == 989
    assert peak_tflops("float32", DEVICE, tf32=True) == 494.7 and peak_tflops("float32", DEVICE, tf32=False) == 67
    assert peak_tflops("mixed_bfloat16", "Tesla T4", tf32=False) is None
    assert peak_tflops("mixed_float16", "unknown", tf32=False, override=100.0) == 100.0


def _dry_run(tmp_path, *extra):
    out = subprocess.run([sys.executable, "-m", "exfuse_keras.bench.gpu", "--dry-run", "--output", str(tmp_path),
                          "--device-name", DEVICE, *extra], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_dry_run_reports_every_part_in_float32(tmp_path):
    """The suite's run: every part and the float32 rows with and without XLA (bfloat16 + XLA is
    tests/test_mixed_precision.py's, on the public API; every row of the table is the slow test below)."""
    _check_dry_run(tmp_path, _dry_run(tmp_path, "--precisions", "float32"), {"float32"})


@pytest.mark.slow
def test_dry_run_reports_every_row(tmp_path):
    # mixed_bfloat16 is left out only on a CPU that cannot run a bfloat16 convolution's gradient.
    _check_dry_run(tmp_path, _dry_run(tmp_path), None)


def _check_dry_run(tmp_path, out, expected_precisions):
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.strip() in out.stdout

    assert report["dry_run"] and report["system"]["peaks_for"] == DEVICE and report["time_limit"] is None
    assert all(r["ok"] for r in report["resize_check"].values()), report["resize_check"]

    step = report["train_step"]
    assert step["forward_gflops"] > 0 and step["size"] == 64
    precisions = {r["precision"] for r in step["rows"]}
    if expected_precisions:
        assert precisions == expected_precisions
    else:  # every row of the GPU table, bf16 + XLA included (it did not compile before resize.py's casts)
        assert "float32" in precisions and precisions <= {"float32", "mixed_bfloat16"}
    assert {(r["precision"], r["xla"], r["batch"]) for r in step["rows"]} == {
        (p, x, 2) for p in precisions for x in (True, False)}
    header = "| precision | XLA | batch | img/s | TFLOP/s | MFU | peak mem (GiB) | loss | error |"
    assert header in table
    table_rows = [line for line in table.splitlines() if line.startswith(("| float32", "| mixed_"))]
    assert len(table_rows) == len(step["rows"])
    for row, line in zip(step["rows"], table_rows):
        assert line.count("|") == header.count("|") and line.startswith(f"| {row['precision']} |")
        assert row["error"] is None, row
        assert row["img_per_s"] > 0 and row["loss_finite"] and math.isfinite(row["loss"])
        assert math.isclose(row["tflops"], 3 * step["forward_gflops"] * row["img_per_s"] / 1000)
        peak = {"float32": 67, "mixed_bfloat16": 989}[row["precision"]]
        assert math.isclose(row["mfu"], row["tflops"] / peak)

    quick = report["quick_start"]
    assert quick["steps"] > 0 and quick["target"] is None and os.path.isfile(os.path.join(quick["model_dir"],
                                                                                          "best.keras"))
    assert "Quick start (configs/quickstart.yaml)" in table
    (export,) = report["export"]["rows"]
    assert export["error"] is None and export["serving_default_ms"] > 0 and export["network_logits_ms"] > 0
    assert set(report["seconds"]) == {"system", "resize check", "train step", "quick start", "export"}


def test_a_time_limit_stops_the_check_with_the_report_so_far(tmp_path):
    # The dry run has no limit of its own (a slow CPU must not skip rows); a given one still holds:
    # the watchdog writes what finished and exits with status 3.
    out = subprocess.run([sys.executable, "-m", "exfuse_keras.bench.gpu", "--dry-run", "--output", str(tmp_path),
                          "--parts", "system,train step", "--time-limit", "3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 3, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["time_limit"] == 3 and report["stopped"].startswith("time limit of 3 s reached during ")
    assert "STOPPED: time limit of 3 s" in (tmp_path / "gpu_check.md").read_text()


def test_an_unknown_precision_is_refused_in_one_line(capsys):
    from exfuse_keras.bench.gpu import main

    with pytest.raises(SystemExit) as stop:
        main(["--dry-run", "--precisions", "float32,float8"])
    assert stop.value.code == 2
    assert "--precisions: unknown ['float8']; choose from mixed_bfloat16, mixed_float16, float32" in \
        capsys.readouterr().err
