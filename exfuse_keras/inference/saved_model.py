"""An exported SavedModel as a predictor, so evaluate.py, predict.py and ``Segmenter`` run exports.

``load_saved_model(path)`` returns the config the export carries (``assets.extra/config.yaml``,
written by exfuse_keras/export/saved_model.py) and a callable
``images float32 [B, H, W, 3] (H, W multiples of 32) -> logits [B, H, W, C]`` that runs the
export's ``network_logits`` signature: the same contract as a Keras model in
``exfuse_keras/inference/loading.py``, so the usual protocol (padding, scales, flip, sliding
windows) runs around the exported network.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import tensorflow as tf

# Where an export keeps the files its graph does not read (the SavedModel convention), and its config.
EXTRA_DIR = "assets.extra"
CONFIG_FILE = "config.yaml"


def is_saved_model(path: str) -> bool:
    """Whether the folder ``path`` holds a SavedModel."""
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


class SavedModelPredictor:
    """``images -> logits`` through a loaded SavedModel's ``network_logits`` signature."""

    def __init__(self, path: str):
        # The loaded object owns the variables: keep it alive as long as the signature.
        self.loaded = tf.saved_model.load(path)
        if "network_logits" not in self.loaded.signatures:
            raise ValueError(f"{path}: this SavedModel has no 'network_logits' signature (not an exfuse export); "
                             f"signatures: {sorted(self.loaded.signatures)}")
        self._logits = self.loaded.signatures["network_logits"]
        self.path = path

    @property
    def num_classes(self) -> Optional[int]:
        """The number of classes the export's logits have (None if its signature leaves it open)."""
        return self._logits.structured_outputs["logits"].shape[-1]

    def __call__(self, images):
        return self._logits(images=tf.cast(images, tf.float32))["logits"]


def load_saved_model(path: str, config_path: Optional[str] = None, overrides: Sequence[str] = ()):
    """(config, ``SavedModelPredictor``) of an export folder.

    Args:
        path: the SavedModel folder (``saved_model.pb``), e.g. ``export/exfuse/1``.
        config_path: a config to use instead of the one inside the export.
        overrides: dotted ``key=value`` overrides (``data.root=...`` to evaluate on data elsewhere).

    Raises:
        ConfigError: no config in the export and none given, or a bad config.
        ModelFileError: the config's class count is not the export's.
    """
    from exfuse_keras.config import ConfigError, load_config

    config_path = config_path or os.path.join(path, EXTRA_DIR, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise ConfigError(f"--weights {path}: no {EXTRA_DIR}/{CONFIG_FILE} in this SavedModel (not written by "
                          f"export.py): pass --config")
    from exfuse_keras.saving import ModelFileError

    cfg = load_config(config_path, overrides)
    predictor = SavedModelPredictor(path)
    classes = predictor.num_classes
    if classes is not None and classes != cfg.data.num_classes:
        given = " (with the --set overrides)" if overrides else ""
        raise ModelFileError(f"{path}: the export predicts {classes} classes but {config_path}{given} has "
                             f"data.num_classes = {cfg.data.num_classes}; expected the config it was exported with")
    return cfg, predictor
