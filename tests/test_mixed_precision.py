"""Every precision trains the full tiny ExFuse (every module, SS heads, synchronized BatchNorm),
with and without XLA: the step compiles, the loss is finite, logits stay float32, float16 gets loss
scaling, and after 20 SGD steps from float32's start the weights stay near float32's trajectory.

The measure (tests/scripts/mixed_precision.py) is ||w - w_f32|| / ||w_f32 - w_0|| over the
trainable weights, after 20 plain-SGD steps (rate 0.005) from float32's start and data. Measured on
a 2-core AMD Zen 3 (oneDNN on), the noise first: float32 against itself 0 (one device, no XLA),
float32 with XLA against without 0.058 (the compiler's own rounding, carried by 20 steps); then
mixed_bfloat16 with XLA 0.204 (train.py's model) and 0.228 (the public API), mixed_float16 with
XLA 0.124. The bounds are 2-2.5x those; a run that does not train, or trains another objective,
lands near 1 or above.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "scripts", "mixed_precision.py")
BOUND = {"float32": 0.15, "mixed_bfloat16": 0.5, "mixed_float16": 0.3}


def _run(only=None):
    command = [sys.executable, SCRIPT, "--steps", "20"] + (["--only", only] if only else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    out = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check(runs):
    references = [r for r in runs if r["precision"] == "float32" and not r["jit"] and r["strategy"] in ("one", "public")]
    assert references and all(r["travelled"] > 1e-2 and r["relative_deviation"] == 0 for r in references), \
        "each family's float32 reference trained"
    for run in runs:
        name = f"{run['precision']} XLA {run['jit']} {run['strategy']}"
        precision = run["precision"].split(" ")[0]
        assert run["finite"], name
        assert run["logits_dtype"] == "float32", name
        assert (run["optimizer"] == "LossScaleOptimizer") == (precision == "mixed_float16"), name
        assert run["relative_deviation"] < BOUND[precision], (name, run["relative_deviation"])


def test_mixed_precision_with_xla_trains_near_float32():
    """The failure users met first: a plain fit on the public API under a global mixed policy with
    jit_compile=True, under mixed_bfloat16 and under mixed_float16 (loss scaling)."""
    runs = _run("mixed_bfloat16:on:public,mixed_float16:on:public")
    assert [r["strategy"] for r in runs] == ["public"] * 3
    _check(runs)


@pytest.mark.slow
def test_every_precision_with_and_without_xla_on_one_device_and_two_replicas():
    runs = _run()
    assert len(runs) == 12
    _check(runs)
