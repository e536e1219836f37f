"""Turning ``--weights`` into a config and a predictor (shared by evaluate.py, predict.py, Segmenter).

A *predictor* is what inference needs from a trained model: a callable
``images float32 [B, H, W, 3] RGB 0-255 (H, W multiples of 32) -> logits [B, H, W, C]`` (or a
dict holding ``"logits"``). A Keras model is one; so is anything else with that contract (an
exported SavedModel's serving function), which is how other model formats plug in:
``load_predictor`` is the one place that decides what a ``--weights`` path holds.
"""

from __future__ import annotations


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
        FileNotFoundError, ConfigError, ModelFileError: as ``run_files.load_network``.
    """
    from exfuse_keras.inference.run_files import load_network
    from exfuse_keras.task import ExFuseImageSegmenter

    cfg, model = load_network(weights, config_path, overrides)
    if isinstance(model.output, dict) and "logits" in model.output:
        model = ExFuseImageSegmenter.from_network(cfg, model)
    return cfg, model


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
