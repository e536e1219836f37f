"""``python -m exfuse_keras.bench.train_step``: the rows it times and the ratios it prints."""

import json

import pytest

from exfuse_keras.bench import train_step


def _row(model, img_per_s, jit_compile=False, precision="float32", gflops=10.0):
    return {"model": model, "precision": precision, "jit_compile": jit_compile, "size": 64, "batch": 8,
            "params": 1000, "forward_gflops": gflops, "img_per_s": img_per_s,
            "achieved_gflops_per_s": 3 * gflops * img_per_s}


@pytest.mark.slow  # about 30 s of model building and tracing for a benchmark script
def test_quick_run_times_the_quick_start(tmp_path, capsys):
    report = tmp_path / "rows.json"
    assert train_step.main(["--quick", "--models", "quickstart", "--json", str(report)]) == 0
    (row,) = json.loads(report.read_text())
    assert (row["model"], row["jit_compile"], row["size"], row["batch"]) == ("quickstart", False, 64, 8)
    assert row["img_per_s"] > 0
    assert row["achieved_gflops_per_s"] == pytest.approx(3 * row["forward_gflops"] * row["img_per_s"])
    assert f"{row['img_per_s']:.3f}" in capsys.readouterr().out


def test_the_table_gives_xla_and_bfloat16_ratios_and_compares_the_backbone_without_xla():
    rows = [_row("exfuse", 2.0), _row("exfuse", 3.0, jit_compile=True), _row("exfuse", 1.0, precision="mixed_bfloat16"),
            _row("backbone", 4.0, gflops=5.0), _row("backbone", 40.0, jit_compile=True, gflops=5.0)]
    table = train_step.format_table(rows, 512, 2)
    assert "XLA on / off img/s = 1.50" in table
    assert "ExFuse / bare backbone achieved GFLOP/s: 1.00" in table  # 60/60 without XLA, not 60/600
    assert "mixed_bfloat16 / float32 img/s = 0.50" in table
    assert table.count("\n") == 1 + len(rows) + 4


@pytest.mark.slow
def test_quick_run_with_xla_compiles_and_times_it(tmp_path):
    report = tmp_path / "rows.json"
    assert train_step.main(["--quick", "--models", "quickstart", "--jit-compile", "off,on", "--json", str(report)]) == 0
    rows = json.loads(report.read_text())
    assert [r["jit_compile"] for r in rows] == [False, True] and all(r["img_per_s"] > 0 for r in rows)


def test_an_unknown_xla_setting_is_refused():
    with pytest.raises(SystemExit) as exit_info:
        train_step.main(["--quick", "--models", "quickstart", "--jit-compile", "auto"])
    assert exit_info.value.code == 2


def test_the_mobile_rows_build_their_configs_without_weights():
    """``mobilenetv3`` and ``mobilenetv3_min`` time the shipped phone configs (no download)."""
    default, minimal = train_step._exfuse_config("mobilenetv3"), train_step._exfuse_config("mobilenetv3_min")
    assert default.model.backbone.architecture == minimal.model.backbone.architecture == "mobilenetv3_large"
    assert (default.model.backbone.minimalistic, minimal.model.backbone.minimalistic) == (False, True)
    assert default.model.backbone.weights is None and minimal.model.backbone.weights is None
    assert train_step.LABELS["mobilenetv3_min"] == "ExFuse-MobileNetV3-Large-minimalistic"
