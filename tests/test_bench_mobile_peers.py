"""bench.mobile_peers: its table is the four measurements' numbers, model by model (the
measurements themselves are timed by hand, docs/mobile.md)."""

from exfuse_keras.bench.mobile_peers import collect, format_table


def test_the_table_takes_each_number_from_its_measurement():
    """Each model's row takes its own numbers: the minimalistic model's label extends the default
    one's, and int8 is not int8_io."""
    export_rows = {"rows": [
        {"model": "ExFuse-ResNet-101 (random init)", "format": "TFLite float32 (2 threads)", "ms": 1000.0},
        {"model": "ExFuse-ResNet-101 (random init)", "format": "TFLite int8 (2 threads)", "ms": 700.0},
        # The minimalistic rows first: a match on the label's prefix would give the default row their numbers.
        {"model": "ExFuse-MobileNetV3-Large-minimalistic (random init)", "format": "TFLite float32 (2 threads)",
         "ms": 75.0},
        {"model": "ExFuse-MobileNetV3-Large-minimalistic (random init)", "format": "TFLite int8_io (2 threads)",
         "ms": 24.0},
        {"model": "ExFuse-MobileNetV3-Large-minimalistic (random init)", "format": "TFLite int8 (2 threads)", "ms": 28.0},
        {"model": "ExFuse-MobileNetV3-Large (random init)", "format": "TFLite float32 (2 threads)", "ms": 87.0},
        {"model": "ExFuse-MobileNetV3-Large (random init)", "format": "TFLite int8 (2 threads)", "ms": 109.0},
        {"model": "ExFuse-MobileNetV3-Large (random init)", "format": "TFLite float16 (2 threads)", "ms": 86.0},
        {"model": "ExFuse-MobileNetV3-Large (random init)", "format": "TFLite int8_io (2 threads)", "ms": 100.0}]}
    train_rows = [{"model": "exfuse", "precision": "float32", "params": 86_600_000, "forward_gflops": 134.9,
                   "img_per_s": 0.218},
                  {"model": "mobilenetv3", "precision": "mixed_bfloat16", "params": 5_110_000, "forward_gflops": 8.24,
                   "img_per_s": 9.0},
                  {"model": "mobilenetv3", "precision": "float32", "params": 5_110_000, "forward_gflops": 8.24,
                   "img_per_s": 1.768},
                  {"model": "mobilenetv3_min", "precision": "float32", "params": 3_560_000, "forward_gflops": 8.17,
                   "img_per_s": 2.5}]
    peer_latency = {"params": 3_720_053, "forward_gflops": 15.69, "tflite_float32_ms": 143.3, "tflite_int8_ms": 317.0}
    rows = collect(export_rows, train_rows, peer_latency, {"img_per_s": 0.819})
    assert [r["model"] for r in rows] == ["ExFuse-ResNet-101", "ExFuse-MobileNetV3-Large",
                                          "ExFuse-MobileNetV3-Large-minimalistic", "keras-hub SegFormer-B0"]
    assert [(r["tflite_float32_ms"], r["tflite_int8_ms"], r["tflite_int8_io_ms"], r["train_img_per_s"])
            for r in rows] == [(1000.0, 700.0, None, 0.218), (87.0, 109.0, 100.0, 1.768), (75.0, 28.0, 24.0, 2.5),
                               (143.3, 317.0, None, 0.819)]
    table = format_table(rows)
    assert "| ExFuse-MobileNetV3-Large | 5.11 M | 8.24 | 87.0 | 109.0 | 100.0 | 1.768 |" in table
    assert "| ExFuse-MobileNetV3-Large-minimalistic | 3.56 M | 8.17 | 75.0 | 28.0 | 24.0 | 2.500 |" in table
    assert "| keras-hub SegFormer-B0 | 3.72 M | 15.69 | 143.3 | 317.0 | – | 0.819 |" in table
    missing = collect({"rows": []}, [], peer_latency, {"img_per_s": 0.819})
    assert "| ExFuse-ResNet-101 | – | – | – | – | – | – |" in format_table(missing)
