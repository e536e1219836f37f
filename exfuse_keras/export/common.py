"""What every exporter shares: the network without its auxiliary heads, the output folder, and
``export.json`` (what a client needs beside the model file).

Imports nothing from the other exporters, so each of them (and export.py) can use it.
"""

from __future__ import annotations

import json
import os

METADATA_FILE = "export.json"


def logits_model(model):
    """The model with its main output only (``"logits"``); the auxiliary heads are pruned."""
    import keras

    outputs = model.output
    if isinstance(outputs, dict):
        outputs = outputs["logits"]
    return keras.Model(model.input, outputs, name=f"{model.name}_logits")


def prepare_output_dir(path: str, overwrite: bool) -> None:
    """Refuses a non-empty ``path`` unless ``overwrite``. The old folder is left in place: the
    exporter writes the new one beside it and swaps them (``exfuse_keras.atomic``)."""
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            raise FileExistsError(f"{path}: exists and is not empty (pass --overwrite to replace it)")
    elif os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path}: exists and is not a folder")


def export_metadata(cfg, export_format: str, **fields) -> dict:
    """What a client needs beside the model file: classes, palette, versions (written as export.json)."""
    import keras
    import numpy as np
    import tensorflow as tf

    return {"format": export_format, "num_classes": cfg.data.num_classes, "class_names": list(cfg.data.class_names),
            "palette": cfg.data.resolved_palette,
            "input": "RGB pixels 0-255 (normalisation is inside the model)", **fields,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}}


def write_json(path: str, values: dict) -> None:
    """Writes ``values`` as indented JSON, atomically (``exfuse_keras.atomic``)."""
    from exfuse_keras.atomic import atomic_write

    atomic_write(path, json.dumps(values, indent=2) + "\n")
