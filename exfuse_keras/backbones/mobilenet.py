"""MobileNetV3 encoders for phones (``model.backbone.architecture: mobilenetv3_large | mobilenetv3_small``).

keras.applications' MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019), without
its classifier and without its own rescaling layer (``InputNormalization("scale")`` in front of
the backbone computes the same ``x / 127.5 - 1`` its ImageNet weights expect), tapped at strides
4, 8, 16 and 32 as the res2..res5 levels ExFuse's modules read. The taps are the last layer at
each resolution, named as keras.applications names them:

====================  ==========================================  ==========================================
level (stride)        MobileNetV3-Large (channels)                MobileNetV3-Small (channels)
====================  ==========================================  ==========================================
res2 (4)              ``expanded_conv_2_add`` (24)                ``expanded_conv_project_bn`` (16)
res3 (8)              ``expanded_conv_5_add`` (40)                ``expanded_conv_2_add`` (24)
res4 (16)             ``expanded_conv_11_add`` (112)              ``expanded_conv_7_add`` (48)
res5 (32)             the last 1x1 convolution's activation (960)  the same (576)
====================  ==========================================  ==========================================

(times ``alpha``, rounded to multiples of 8, except the last). ``minimalistic`` is keras.applications'
variant with ReLU for hard-swish, no squeeze-excite and 3x3 kernels: TFLite's XNNPACK has no int8
HARD_SWISH, so in the standard networks' int8 files every hard-swish runs TFLite's own kernel
(measured: bench.tflite_ops), where the minimalistic file runs every op in XNNPACK. SS heads, SEB,
GCN, ECRE and DAP
read any channel count; layer rearrangement (LR) is a ResNe(X)t block count and is refused for
these backbones (config.py). ``weights``: ``null``, ``imagenet`` (downloaded once into
``~/.keras/models`` by keras.applications) or a local ``.h5`` file of the application's weights.
"""

from __future__ import annotations

import os

import keras

from exfuse_keras.config import BackboneConfig

# architecture -> (keras.applications constructor, {level: layer name, None: the model's output})
TAPS = {
    "mobilenetv3_large": ("MobileNetV3Large", {"res2": "expanded_conv_2_add", "res3": "expanded_conv_5_add",
                                               "res4": "expanded_conv_11_add", "res5": None}),
    "mobilenetv3_small": ("MobileNetV3Small", {"res2": "expanded_conv_project_bn", "res3": "expanded_conv_2_add",
                                               "res4": "expanded_conv_7_add", "res5": None}),
}


def keras_application(cfg: BackboneConfig, weights=None) -> keras.Model:
    """The keras.applications MobileNetV3 of ``cfg`` (no top, no rescaling, any input size)."""
    constructor, _ = TAPS[cfg.architecture]
    return getattr(keras.applications, constructor)(input_shape=(None, None, 3), alpha=cfg.alpha,
                                                    minimalistic=cfg.minimalistic, include_top=False,
                                                    weights=weights, include_preprocessing=False)


def _load_local_weights(application: keras.Model, cfg: BackboneConfig) -> None:
    """``cfg.weights``, a local ``.h5`` of the keras.applications network (offline), into
    ``application``; a missing or mismatching file is a ``WeightsError`` of one line."""
    from exfuse_keras.backbones.weights import WeightsError

    expected = (f"the keras.applications {TAPS[cfg.architecture][0]} weights (alpha {cfg.alpha}"
                f"{', minimalistic' if cfg.minimalistic else ''}, without its top)")
    if not os.path.isfile(cfg.weights):
        raise WeightsError(f"model.backbone.weights: file not found: {cfg.weights} (expected an .h5 of {expected})")
    try:
        application.load_weights(cfg.weights)
    except Exception as err:  # h5py and Keras raise many types for a mismatching file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(":")
        raise WeightsError(f"model.backbone.weights: {cfg.weights} does not hold {expected}: {reason}") from None


def build_mobilenet_backbone(cfg: BackboneConfig, name: str = "backbone") -> keras.Model:
    """The encoder as a functional model with ``cfg.weights`` loaded.

    Input: normalised images ``[N, H, W, 3]`` in [-1, 1] (any H, W multiples of 32). Output:
    ``{"res2": [N, H/4, W/4, c2], "res3": .../8, "res4": .../16, "res5": [N, H/32, W/32, c5]}``
    (channels in the module doc).

    Example::

        from exfuse_keras.config import BackboneConfig

        encoder = build_mobilenet_backbone(BackboneConfig(architecture="mobilenetv3_large"))
        encoder(images)["res5"].shape          # images [N, 512, 512, 3] -> (N, 16, 16, 960)
    """
    local_file = cfg.weights not in (None, "imagenet")
    application = keras_application(cfg, None if local_file else cfg.weights)
    if local_file:
        _load_local_weights(application, cfg)
    # keras.applications builds MobileNetV3's BatchNorms with momentum 0.999: moving statistics that
    # lag thousands of steps behind a network trained from scratch, so that inference mode predicts
    # background only after 2,000 steps (docs/benchmarks.md, "peers"). model.backbone.bn_momentum
    # (0.99, as the ResNets use) applies to them as to every other backbone.
    for layer in application.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = cfg.bn_momentum
    _, taps = TAPS[cfg.architecture]
    outputs = {level: application.output if layer is None else application.get_layer(layer).output
               for level, layer in taps.items()}
    return keras.Model(application.input, outputs, name=name)
