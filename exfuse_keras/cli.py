"""The console scripts ``pip install .`` puts on the PATH, each the ``main`` of a command:

==================  ==========================================  ===========================
script              command                                     same as
==================  ==========================================  ===========================
exfuse-train        exfuse_keras.training.run                   ``python train.py``
exfuse-evaluate     exfuse_keras.evaluation.evaluate            ``python evaluate.py``
exfuse-predict      exfuse_keras.inference.predict              ``python predict.py``
exfuse-export       exfuse_keras.export.cli                     ``python export.py``
exfuse-validate     exfuse_keras.data.validate                  ``python -m exfuse_keras.data.validate``
exfuse-browse       exfuse_keras.data.browse                    ``python -m exfuse_keras.data.browse``
==================  ==========================================  ===========================

Each turns TensorFlow's oneDNN CPU kernels on before TensorFlow is imported, as the scripts at
the repository's root do (exfuse_keras/onednn.py), and returns the command's exit status.
"""

from __future__ import annotations

import importlib

COMMANDS = {
    "exfuse-train": "exfuse_keras.training.run",
    "exfuse-evaluate": "exfuse_keras.evaluation.evaluate",
    "exfuse-predict": "exfuse_keras.inference.predict",
    "exfuse-export": "exfuse_keras.export.cli",
    "exfuse-validate": "exfuse_keras.data.validate",
    "exfuse-browse": "exfuse_keras.data.browse",
}


def run(script: str, argv=None) -> int:
    """Runs ``script``'s command (``COMMANDS``) on ``argv`` (default ``sys.argv[1:]``)."""
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()
    return importlib.import_module(COMMANDS[script]).main(argv)


def train() -> int:
    return run("exfuse-train")


def evaluate() -> int:
    return run("exfuse-evaluate")


def predict() -> int:
    return run("exfuse-predict")


def export() -> int:
    return run("exfuse-export")


def validate() -> int:
    return run("exfuse-validate")


def browse() -> int:
    return run("exfuse-browse")
