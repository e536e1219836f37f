"""Pretrained backbone weights: keras.applications' ImageNet ResNets, or a local file.

``backbone.weights: imagenet`` builds keras.applications' ResNet50/101/152 with
``weights="imagenet"`` (downloaded once into ~/.keras/models on a user's machine); a path to
a ``.h5`` / ``.weights.h5`` file of such a model, or to a saved ``.keras`` model that
contains its layers, works offline. Weights are copied layer by layer by name, which the
keras convention of ``build_backbone`` keeps identical to keras.applications.
"""

from __future__ import annotations

import os

import keras

from exfuse_keras.config import BackboneConfig

_APPLICATIONS = {6: "ResNet50", 23: "ResNet101", 36: "ResNet152"}


class WeightsError(ValueError):
    """A weights file that does not exist or does not fit the backbone."""


def keras_application_for(cfg: BackboneConfig):
    """The keras.applications constructor whose architecture equals this backbone."""
    name = _APPLICATIONS.get(cfg.blocks[2])
    if name is None or cfg.convention != "keras" or cfg.cardinality != 1:
        raise WeightsError(f"model.backbone: no keras.applications ResNet matches blocks {cfg.blocks}, "
                           f"cardinality {cfg.cardinality}, convention {cfg.convention!r}")
    return getattr(keras.applications, name)


def _source_model(cfg: BackboneConfig, weights: str) -> keras.Model:
    if weights == "imagenet":
        return keras_application_for(cfg)(weights="imagenet", include_top=False, input_shape=(None, None, 3))
    if not os.path.isfile(weights):
        raise WeightsError(f"model.backbone.weights: file not found: {weights}")
    if weights.endswith(".keras"):
        from exfuse_keras.saving import load_model_file

        return load_model_file(weights)
    model = keras_application_for(cfg)(weights=None, include_top=False, input_shape=(None, None, 3))
    try:
        model.load_weights(weights)
    except Exception as err:  # h5py and Keras raise many types for a mismatching file
        raise WeightsError(f"model.backbone.weights: {weights} does not hold "
                           f"{model.name} weights: {err}") from None
    return model


def weighted_layers_by_name(model: keras.Model) -> dict:
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(weighted_layers_by_name(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def copy_weights_by_name(source: keras.Model, target: keras.Model, strict: bool = True) -> int:
    """Copies every weighted layer of ``target`` from the same-named layer of ``source``.

    Args:
        source, target: models (nested models are searched too).
        strict: raise ``WeightsError`` naming the first layer of ``target`` that is missing from
            ``source`` or whose weight shapes differ; ``False`` leaves such layers as built (a
            head for another number of classes).

    Returns:
        The number of layers copied.
    """
    available = weighted_layers_by_name(source)
    copied = 0
    for name, layer in weighted_layers_by_name(target).items():
        src = available[name].get_weights() if name in available else None
        dst_shapes = [tuple(w.shape) for w in layer.weights]
        fits = src is not None and [tuple(w.shape) for w in src] == dst_shapes
        if not fits and not strict:
            continue
        if src is None:
            raise WeightsError(f"pretrained weights have no layer '{name}' (source model {source.name!r})")
        if not fits:
            raise WeightsError(f"layer '{name}': pretrained shapes {[w.shape for w in src]} "
                               f"differ from the backbone's {dst_shapes}")
        layer.set_weights(src)
        copied += 1
    return copied


def load_backbone_weights(backbone: keras.Model, cfg: BackboneConfig) -> int:
    """Loads ``cfg.weights`` into ``backbone``; returns the number of layers set."""
    return copy_weights_by_name(_source_model(cfg, cfg.weights), backbone)
