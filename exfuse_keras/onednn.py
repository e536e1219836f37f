"""oneDNN CPU kernels on for the command-line entry points, unless the user chose.

TensorFlow 2.21 turns its oneDNN kernels on by itself only on some CPUs (on the AVX-512 AMD Zen 4
and Zen 5 we measured, not on an AVX2 Zen 3), and reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it
is imported. On the Zen 3 the quick start trained at 41 img/s by default and at 60 img/s with
oneDNN on (docs/benchmarks.md), so train.py, pretrain.py, evaluate.py, predict.py, export.py and
``python -m exfuse_keras.ablation`` call ``prefer_onednn()`` before anything imports TensorFlow.
A value the user set (``TF_ENABLE_ONEDNN_OPTS=0`` to turn it off) is left as it is; a library
user's own script is never changed.

This module does not import TensorFlow.
"""

import os
import sys

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn(environ=None) -> str:
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` unless the user set it or TensorFlow is already imported.

    Args:
        environ: the environment to change (``os.environ`` by default).

    Returns:
        ``"set"`` (turned on here), ``"user"`` (the user's value kept) or ``"too late"``
        (TensorFlow was imported first; nothing changed, TensorFlow's own choice stands).

    Example::

        from exfuse_keras.onednn import prefer_onednn
        prefer_onednn()          # first, before any import of tensorflow or keras
        import tensorflow as tf
    """
    environ = os.environ if environ is None else environ
    if VARIABLE in environ:
        return "user"
    if "tensorflow" in sys.modules:
        return "too late"
    environ[VARIABLE] = "1"
    return "set"
