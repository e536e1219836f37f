"""The entry points turn TensorFlow's oneDNN kernels on unless the user chose (exfuse_keras/onednn.py)."""

import ast
import os
import subprocess
import sys

import pytest

from exfuse_keras.onednn import VARIABLE, prefer_onednn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Imports an entry script's module-level code the way `python train.py` runs it, then asks
# TensorFlow whether its oneDNN kernels are on.
PROBE = ("import runpy, sys; sys.argv = ['{script}', '--help']\n"
         "try:\n    runpy.run_path('{script}', run_name='not_main')\nexcept SystemExit:\n    pass\n"
         "from tensorflow.python.util import _pywrap_util_port\n"
         "import os; print(os.environ.get('{var}'), _pywrap_util_port.IsMklEnabled())")


def test_prefer_onednn_sets_it_only_when_the_user_did_not():
    environ = {}
    result = prefer_onednn(environ)  # "too late" once this process has imported TensorFlow
    assert (result, environ) in (("set", {VARIABLE: "1"}), ("too late", {}))
    assert prefer_onednn({VARIABLE: "0"}) == "user"


def _probe(script, env_value):
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    if env_value is not None:
        env[VARIABLE] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE.format(script=os.path.join(ROOT, script), var=VARIABLE)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-2:]


SCRIPTS = ["train.py", "evaluate.py", "predict.py", "pretrain.py", "export.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_entry_point_calls_prefer_onednn_before_importing_the_package(script):
    tree = ast.parse(open(os.path.join(ROOT, script)).read())
    statements = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr))]
    call = next(i for i, node in enumerate(statements) if isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "prefer_onednn")
    earlier_imports = [node.module for node in statements[:call]
                     if isinstance(node, ast.ImportFrom) and node.module != "exfuse_keras.onednn"]
    assert earlier_imports == [], f"{script} imports {earlier_imports} before prefer_onednn()"


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])  # TensorFlow imported late / at import
def test_entry_points_turn_onednn_on_before_tensorflow_starts(script):
    assert _probe(script, None) == ["1", "True"]


def test_a_value_the_user_set_is_kept():
    assert _probe("evaluate.py", "0") == ["0", "False"]
