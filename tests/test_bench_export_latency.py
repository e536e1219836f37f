"""The export benchmark (exfuse_keras/bench/export_latency.py): its JSON rows, one per (model,
format), match the printed table, and each format's argmax agreement with Keras is what the
format promises (float32 files reproduce Keras; the SavedModel's raw logits are the same graph)."""

import json
import math
import os
import subprocess
import sys

import numpy as np

from exfuse_keras.bench.export_latency import argmax_agreement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ["keras predict", "SavedModel serving_default (JPEG in, mask out)", "SavedModel network_logits",
           "TFLite float32 (2 threads)", "TFLite float16 (2 threads)", "TFLite dynamic (2 threads)",
           "TFLite int8 (2 threads)", "TFLite int8_io (2 threads)", "ONNX onnxruntime (2 threads)"]


def test_argmax_agreement_counts_matching_pixels():
    reference = np.zeros((1, 2, 2, 3))
    reference[..., 0] = 1                       # class 0 everywhere
    logits = reference.copy()
    logits[0, 0, 0] = [0, 2, 0]                 # one pixel of four says class 1
    assert argmax_agreement([logits, reference], [reference, reference]) == (0.75 + 1.0) / 2


def test_quick_run_writes_one_json_row_per_model_and_format(tmp_path):
    path = tmp_path / "latency.json"
    out = subprocess.run([sys.executable, "-m", "exfuse_keras.bench.export_latency", "--quick",
                          "--run", str(tmp_path / "no_run"), "--json", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(path.read_text())
    assert report["size"] == 64 and report["threads"] == 2 and "cpu family" in report["cpu"]
    rows = {row["format"]: row for row in report["rows"]}
    assert list(rows) == FORMATS and len(report["rows"]) == len(FORMATS)
    for row in report["rows"]:
        assert set(row) == {"model", "format", "ms", "mb", "agreement"}
        assert row["model"] == "quick start (random init)"
        assert math.isfinite(row["ms"]) and row["ms"] > 0
        assert (row["mb"] is None) == (row["format"] == "SavedModel network_logits") and (row["mb"] or 1) > 0
        measured = row["format"].startswith(("SavedModel network", "TFLite", "ONNX"))
        assert (row["agreement"] is not None) == measured
        size = f"{row['mb']:.2f}" if row["mb"] is not None else "(same folder)"
        agreement = f"{row['agreement']:.4f}" if measured else ""
        assert f"| {row['model']} | {row['format']} | {row['ms']:.1f} | {size} | {agreement} |" in out.stdout
    for fmt in ("SavedModel network_logits", "TFLite float32 (2 threads)", "ONNX onnxruntime (2 threads)"):
        assert rows[fmt]["agreement"] >= 0.999, rows[fmt]
    assert 0 <= rows["TFLite int8 (2 threads)"]["agreement"] <= 1
    float32 = rows["TFLite float32 (2 threads)"]["mb"]
    assert rows["TFLite float16 (2 threads)"]["mb"] < 0.6 * float32
    assert rows["TFLite int8 (2 threads)"]["mb"] < 0.4 * float32
    assert rows["TFLite dynamic (2 threads)"]["mb"] < 0.4 * float32
