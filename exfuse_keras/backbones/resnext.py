"""ResNet / ResNeXt v1 bottleneck encoders; LR is a block-count setting (ExFuse Sec. 3.1).

One builder covers ResNet-50/101/152 (cardinality 1, base width 64), ResNeXt 32x4d / 32x8d
and the paper's layer rearrangement (blocks ``[8, 8, 9, 8]`` instead of ``[3, 4, 23, 3]``).
It returns the four stage outputs res2..res5 at strides 4, 8, 16 and 32.

Two conventions:

- ``keras``: keras.applications' ResNets. The stride sits on the first 1x1 conv of a block,
  every conv has a bias, BN epsilon 1.001e-5. Layer names equal keras.applications', so
  its ImageNet weights load by name.
- ``torchvision``: stride on the 3x3 conv, bias-free convs, BN epsilon 1e-5. The reference
  parameter counts in docs/design.md ("LR") use it.

Layer names follow keras.applications in both: ``conv{stage}_block{i}_{0..3}_{conv,bn}``
(0 is the projection shortcut).
"""

from __future__ import annotations

import keras

from exfuse_keras.config import BackboneConfig
from exfuse_keras.layers.grouped import GroupedConv2D
from exfuse_keras.layers.normalization import SyncBatchNormalization

STAGES = ("res2", "res3", "res4", "res5")


def _norm(cfg: BackboneConfig, name: str, gamma_initializer: str = "ones") -> keras.layers.BatchNormalization:
    layer_class = SyncBatchNormalization if cfg.norm == "sync_batch" else keras.layers.BatchNormalization
    layer = layer_class(axis=-1, epsilon=1.001e-5 if cfg.convention == "keras" else 1e-5,
                        momentum=cfg.bn_momentum, gamma_initializer=gamma_initializer, name=name)
    if cfg.norm == "frozen":
        # A non-trainable BatchNormalization runs in inference mode in Keras 3: moving
        # statistics are used and never updated, and gamma/beta stay fixed.
        layer.trainable = False
    return layer


def _conv(cfg, filters, kernel_size, strides, name, groups=1, padding="valid"):
    """A bias-free (torchvision) or biased (keras) convolution; grouped ones are ``GroupedConv2D``,
    which trains on CPUs where Keras' grouped convolution's gradient does not."""
    layer = GroupedConv2D if groups > 1 else keras.layers.Conv2D
    return layer(filters, kernel_size, strides=strides, groups=groups, padding=padding,
                 use_bias=cfg.convention == "keras", name=name)


def bottleneck_block(x, cfg: BackboneConfig, width: int, out_channels: int, strides: int, name: str):
    """One bottleneck block: 1x1 reduce, 3x3 (grouped) conv, 1x1 expand, residual add.

    Shapes: ``[N, H, W, C_in] -> [N, H / strides, W / strides, out_channels]``.
    """
    keras_style = cfg.convention == "keras"
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = _conv(cfg, out_channels, 1, strides, f"{name}_0_conv")(x)
        shortcut = _norm(cfg, f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    y = _conv(cfg, width, 1, strides if keras_style else 1, f"{name}_1_conv")(x)
    y = _norm(cfg, f"{name}_1_bn")(y)
    y = keras.layers.Activation("relu", name=f"{name}_1_relu")(y)
    mid_strides = 1 if keras_style else strides
    if mid_strides == 1:
        y = _conv(cfg, width, 3, 1, f"{name}_2_conv", groups=cfg.cardinality, padding="same")(y)
    else:
        # Symmetric padding like torchvision; 'same' would pad only bottom/right for even sizes.
        y = keras.layers.ZeroPadding2D(1, name=f"{name}_2_pad")(y)
        y = _conv(cfg, width, 3, mid_strides, f"{name}_2_conv", groups=cfg.cardinality)(y)
    y = _norm(cfg, f"{name}_2_bn")(y)
    y = keras.layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = _conv(cfg, out_channels, 1, 1, f"{name}_3_conv")(y)
    # zero_init_residual: the branch starts at zero, the block at its shortcut (BackboneConfig).
    y = _norm(cfg, f"{name}_3_bn", "zeros" if cfg.zero_init_residual else "ones")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def stage_widths(cfg: BackboneConfig, stage: int) -> tuple[int, int]:
    """(grouped 3x3 width, output channels) of stage 0..3, as in torchvision's ResNeXt."""
    planes = cfg.base_channels * 2 ** stage
    width = int(planes * cfg.base_width / 64) * cfg.cardinality
    return width, planes * 4


def build_backbone(cfg: BackboneConfig, name: str = "backbone") -> keras.Model:
    """Builds the encoder as a functional model.

    Input: normalised images ``[N, H, W, 3]`` (any H, W). Output: a dict
    ``{"res2": [N, H/4, W/4, 4*b], "res3": .../8, "res4": .../16, "res5": [N, H/32, W/32, 32*b]}``
    with ``b = base_channels``.

    Args:
        cfg (BackboneConfig): ``model.backbone``: block counts, cardinality, widths,
            convention (``keras`` or ``torchvision``) and norm. Weights are not loaded here
            (``exfuse_keras.backbones.weights.load_backbone_weights`` does that).
        name (str): the model's name.

    Returns:
        keras.Model: random-initialised, with the dict of four stage outputs.

    Example::

        from exfuse_keras.config import BackboneConfig

        lr = build_backbone(BackboneConfig(blocks=[8, 8, 9, 8], cardinality=32, base_width=4))
        features = lr(images)                  # images: [N, 512, 512, 3], normalised
        features["res5"].shape                 # (N, 16, 16, 2048)
    """
    inputs = keras.Input((None, None, 3), name="normalized_image")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = _conv(cfg, cfg.stem_channels, 7, 2, "conv1_conv")(x)
    x = _norm(cfg, "conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    # Zero padding before max-pooling equals torchvision's -inf padding: inputs are post-ReLU.
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    outputs = {}
    for stage, (level, num_blocks) in enumerate(zip(STAGES, cfg.blocks)):
        width, out_channels = stage_widths(cfg, stage)
        for block in range(num_blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = bottleneck_block(x, cfg, width, out_channels, strides, f"conv{stage + 2}_block{block + 1}")
        outputs[level] = x
    return keras.Model(inputs, outputs, name=name)


def build_classifier(cfg: BackboneConfig, num_classes: int = 1000, name: str = "classifier") -> keras.Model:
    """The backbone with ImageNet's head (global pooling + dense), e.g. for parameter counts.

    Shapes: ``[N, H, W, 3] -> [N, num_classes]`` (logits).
    """
    backbone = build_backbone(cfg)
    inputs = keras.Input((None, None, 3), name="normalized_image")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone(inputs)["res5"])
    logits = keras.layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, logits, name=name)
