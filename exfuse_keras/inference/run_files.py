"""A training run's files: its config and its ``.keras`` model, as they are on disk.

``load_network`` is what ``inference.loading.load_run`` (which wraps the network in the
``ExFuseImageSegmenter`` task) and ``ExFuseImageSegmenter.from_preset`` share; it imports
neither, so the task and the loaders do not import each other.
"""

from __future__ import annotations

import os


def load_network(weights: str, config_path=None, overrides=()):
    """(config, keras model) from a run directory (its config.yaml and best.keras) or a .keras
    file: the network as the file holds it (``load_run`` wraps it in the task).

    Args:
        weights: a training run's folder (``best.keras``, else ``last.keras``) or a ``.keras`` file.
        config_path: the config; default the run folder's ``config.yaml`` (required for a file).
        overrides: dotted ``key=value`` config overrides (e.g. ``data.root=...``).

    Raises:
        FileNotFoundError: no model file there.
        ConfigError: no config for a file or in the run folder, or a bad config.
        ModelFileError: a broken or foreign ``.keras`` file (exfuse_keras/saving.py), or a model
            predicting another number of classes than the config's ``data.num_classes``.
    """
    from exfuse_keras.config import ConfigError, load_config
    from exfuse_keras.saving import ModelFileError, load_model_file

    if os.path.isdir(weights):
        model_path = os.path.join(weights, "best.keras")
        if not os.path.isfile(model_path):
            model_path = os.path.join(weights, "last.keras")
    else:
        model_path = weights
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"--weights {weights}: no best.keras, last.keras or .keras file there")
    if os.path.isdir(weights) and config_path is None:
        config_path = os.path.join(weights, "config.yaml")
        if not os.path.isfile(config_path):
            raise ConfigError(f"--weights {weights}: no config.yaml in this run folder (train.py writes one); "
                              f"pass --config")
    if config_path is None:
        raise ConfigError(f"--weights {weights} is a file: pass --config (the run's config.yaml)")
    cfg = load_config(config_path, overrides)
    model = load_model_file(model_path)
    classes = _logits_channels(model)
    if classes is not None and classes != cfg.data.num_classes:
        raise ModelFileError(f"{model_path}: the model predicts {classes} classes but {config_path} has "
                             f"data.num_classes = {cfg.data.num_classes}; expected the config it was trained with")
    return cfg, model


def _logits_channels(model):
    """The number of classes a Keras model's ``logits`` (or only) output predicts, if known."""
    output = model.output
    if isinstance(output, dict):
        output = output.get("logits")
    shape = getattr(output, "shape", None)
    return shape[-1] if shape else None
