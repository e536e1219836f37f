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
    """(config, keras model) from a run directory (its config.yaml and best.keras) or a .keras file.

    Args:
        weights: a training run's folder (``best.keras``, else ``last.keras``) or a ``.keras`` file.
        config_path: the config; default the run folder's ``config.yaml`` (required for a file).
        overrides: dotted ``key=value`` config overrides (e.g. ``data.root=...``).

    Raises:
        FileNotFoundError: no model file there.
        ConfigError: no config for a file, or a bad config.
    """
    import keras

    import exfuse_keras.layers  # noqa: F401  (registers the custom layers for load_model)
    from exfuse_keras.config import ConfigError, load_config

    if os.path.isdir(weights):
        model_path = os.path.join(weights, "best.keras")
        if not os.path.isfile(model_path):
            model_path = os.path.join(weights, "last.keras")
        config_path = config_path or os.path.join(weights, "config.yaml")
    else:
        model_path = weights
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"--weights {weights}: no best.keras, last.keras or .keras file there")
    if config_path is None:
        raise ConfigError(f"--weights {weights} is a file: pass --config (the run's config.yaml)")
    cfg = load_config(config_path, overrides)
    return cfg, keras.models.load_model(model_path, compile=False)


def load_predictor(weights: str, config_path=None, overrides=()):
    """(config, predictor) for ``--weights`` (see the module doc for the predictor contract).

    A training run's folder or a ``.keras`` file (``load_run``): the predictor is the Keras
    model. A SavedModel folder written by export.py (``saved_model.pb``): its config and its
    ``network_logits`` signature (exfuse_keras/inference/saved_model.py).

    Call it inside ``strategy.scope()`` to place the variables for a distribution strategy.
    """
    from exfuse_keras.inference.saved_model import is_saved_model, load_saved_model

    if is_saved_model(weights):
        return load_saved_model(weights, config_path, overrides)
    return load_run(weights, config_path, overrides)
