"""Turning ``--weights`` into a config and a predictor (shared by evaluate.py, predict.py, Segmenter).

A *predictor* is what inference needs from a trained model: a callable
``images float32 [B, H, W, 3] RGB 0-255 (H, W multiples of 32) -> logits [B, H, W, C]`` (or a
dict holding ``"logits"``). A Keras model is one; so is anything else with that contract (an
exported SavedModel's serving function), which is how other model formats plug in:
``load_predictor`` is the one place that decides what a ``--weights`` path holds.
"""

from __future__ import annotations

import os


def load_run(weights: str, config_path=None, overrides=()):
    """(config, task) from a run directory (its config.yaml and best.keras) or a .keras file.

    The model comes back as an ``ExFuseImageSegmenter`` (exfuse_keras/task.py) around the
    file's network, sharing its layers: a ``keras.Model`` whose call gives the network's dict of
    outputs, so evaluation, prediction and export all run on the task. A file holding some other
    Keras model (no ``logits`` output) comes back as it is.

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
    if isinstance(model.output, dict) and "logits" in model.output:
        from exfuse_keras.task import ExFuseImageSegmenter

        model = ExFuseImageSegmenter.from_network(cfg, model)
    return cfg, model


def _logits_channels(model):
    """The number of classes a Keras model's ``logits`` (or only) output predicts, if known."""
    output = model.output
    if isinstance(output, dict):
        output = output.get("logits")
    shape = getattr(output, "shape", None)
    return shape[-1] if shape else None


def load_predictor(weights: str, config_path=None, overrides=()):
    """(config, predictor) for ``--weights`` (see the module doc for the predictor contract).

    A training run's folder or a ``.keras`` file (``load_run``): the predictor is the
    ``ExFuseImageSegmenter`` task around its network. A SavedModel folder written by export.py (``saved_model.pb``): its config and its
    ``network_logits`` signature (exfuse_keras/inference/saved_model.py).

    Call it inside ``strategy.scope()`` to place the variables for a distribution strategy.
    """
    from exfuse_keras.inference.saved_model import is_saved_model, load_saved_model

    if is_saved_model(weights):
        return load_saved_model(weights, config_path, overrides)
    return load_run(weights, config_path, overrides)
