"""The ResNet/ResNeXt builder against keras.applications and the reference parameter counts."""

import dataclasses

import keras
import numpy as np
import pytest

from exfuse_keras.backbones.resnext import build_backbone, build_classifier
from exfuse_keras.backbones.weights import WeightsError, copy_weights_by_name, load_backbone_weights
from exfuse_keras.config import BackboneConfig
from tests.helpers import serve_keras_downloads

# docs/design.md's table ("LR"; torchvision-style, 1000-class head); the standard rows equal
# torchvision's published counts.
REFERENCE_COUNTS = [
    ([3, 4, 6, 3], 1, 64, 25_557_032),     # ResNet-50
    ([3, 4, 6, 3], 32, 4, 25_028_904),     # ResNeXt-50 32x4d
    ([3, 4, 23, 3], 1, 64, 44_549_160),    # ResNet-101
    ([3, 4, 23, 3], 32, 4, 44_177_704),    # ResNeXt-101 32x4d
    ([8, 8, 9, 8], 32, 4, 52_381_480),     # ResNeXt-101 32x4d with layer rearrangement
    ([3, 4, 23, 3], 32, 8, 88_791_336),    # ResNeXt-101 32x8d
]


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("blocks,cardinality,base_width,expected", REFERENCE_COUNTS)
def test_torchvision_style_parameter_counts(blocks, cardinality, base_width, expected):
    cfg = BackboneConfig(blocks=blocks, cardinality=cardinality, base_width=base_width)
    assert _trainable(build_classifier(cfg, 1000)) == expected


def test_keras_convention_loads_keras_applications_resnet101_weights(rng):
    reference = keras.applications.ResNet101(weights=None, include_top=False, input_shape=(None, None, 3))
    cfg = BackboneConfig(blocks=[3, 4, 23, 3], cardinality=1, base_width=64, convention="keras")
    backbone = build_backbone(cfg)
    assert backbone.count_params() == reference.count_params()
    copied = copy_weights_by_name(reference, backbone)
    assert copied == sum(1 for layer in reference.layers if layer.weights)
    x = rng.standard_normal((1, 96, 64, 3)).astype("float32") * 50
    expected = reference(x, training=False).numpy()
    got = backbone(x, training=False)
    assert got["res5"].shape == expected.shape == (1, 3, 2, 2048)
    assert np.abs(got["res5"].numpy() - expected).max() <= 1e-5 * np.abs(expected).max()
    assert [got[k].shape[1] for k in ("res2", "res3", "res4", "res5")] == [24, 12, 6, 3]


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory):
    """A keras.applications ResNet50 weights file, standing in for the ImageNet download."""
    source = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(None, None, 3))
    path = str(tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5")
    source.save_weights(path)
    return source, path


def _resnet50_cfg(weights):
    return BackboneConfig(blocks=[3, 4, 6, 3], cardinality=1, base_width=64, convention="keras", weights=weights)


def test_local_weights_file_loads_offline(resnet50_weights, rng):
    source, path = resnet50_weights
    backbone = build_backbone(_resnet50_cfg(path))
    load_backbone_weights(backbone, _resnet50_cfg(path))
    x = rng.uniform(-100, 100, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(backbone(x)["res5"].numpy(), source(x).numpy(), rtol=1e-5, atol=1e-4)


def test_imagenet_weights_go_through_keras_download(resnet50_weights, rng, monkeypatch):
    """`weights: imagenet` asks keras.applications for its file; here the download returns a local one."""
    source, path = resnet50_weights
    requested = serve_keras_downloads(monkeypatch, path)
    backbone = build_backbone(_resnet50_cfg("imagenet"))
    load_backbone_weights(backbone, _resnet50_cfg("imagenet"))
    assert requested and requested[0][0] == "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert requested[0][1].startswith("https://")
    x = rng.uniform(-100, 100, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(backbone(x)["res5"].numpy(), source(x).numpy(), rtol=1e-5, atol=1e-4)


def test_missing_or_mismatched_weights_fail_clearly(tmp_path):
    cfg = _resnet50_cfg(str(tmp_path / "missing.h5"))
    with pytest.raises(WeightsError, match="file not found: .*missing.h5"):
        load_backbone_weights(build_backbone(cfg), cfg)
    tiny = BackboneConfig(blocks=[1, 1, 1, 1], cardinality=1, base_width=64, base_channels=8, stem_channels=8)
    with pytest.raises(WeightsError, match="no layer 'conv2_block1_0_conv'|shapes"):
        copy_weights_by_name(build_backbone(tiny), build_backbone(_resnet50_cfg(None)))


def test_norm_choices():
    def bns(norm):
        model = build_backbone(BackboneConfig(blocks=[1, 1, 1, 1], base_channels=8, stem_channels=8,
                                              cardinality=2, base_width=16, norm=norm))
        return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]

    assert all(not bn.synchronized and bn.trainable for bn in bns("batch"))
    assert all(bn.synchronized for bn in bns("sync_batch"))
    frozen = bns("frozen")
    assert all(not bn.trainable and not bn.trainable_weights for bn in frozen)


def test_conventions_place_the_stride_differently():
    def conv(convention, name):
        cfg = BackboneConfig(blocks=[1, 1, 1, 1], base_channels=8, stem_channels=8, cardinality=1,
                             base_width=64, convention=convention)
        return build_backbone(cfg).get_layer(name)

    assert conv("keras", "conv3_block1_1_conv").strides == (2, 2) and conv("keras", "conv3_block1_1_conv").use_bias
    assert conv("torchvision", "conv3_block1_1_conv").strides == (1, 1)
    assert conv("torchvision", "conv3_block1_2_conv").strides == (2, 2)
    assert not conv("torchvision", "conv3_block1_2_conv").use_bias


def test_zero_init_residual_makes_each_fresh_block_its_shortcut(rng):
    """zero_init_residual: an untrained identity-shortcut block returns its (post-ReLU) input
    exactly, so a deep random stack does not grow its activations with depth; without it they do."""
    from exfuse_keras.backbones.resnext import bottleneck_block

    cfg = BackboneConfig(blocks=[3, 4, 23, 3], cardinality=1, base_width=64, base_channels=8, stem_channels=8)
    x = np.maximum(rng.normal(size=(2, 8, 8, 32)), 0).astype("float32")
    inputs = keras.Input((None, None, 32))
    block = keras.Model(inputs, bottleneck_block(inputs, cfg, 8, 32, 1, "conv2_block2"))
    np.testing.assert_array_equal(block(x, training=False).numpy(), x)
    deep = {zero: build_backbone(dataclasses.replace(cfg, zero_init_residual=zero)) for zero in (True, False)}
    images = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    spread = {zero: float(np.std(model(images, training=True)["res4"])) for zero, model in deep.items()}
    # res4: 23 blocks, whose residual branches each add about unit variance when not zeroed.
    assert spread[True] < 1.5 and spread[False] > 3 * spread[True], spread


# ResNeXt's grouped convolution ----------------------------------------------------------------

def test_block_diagonal_mask_pairs_the_channels_of_each_group():
    from exfuse_keras.layers.grouped import block_diagonal_mask

    mask = block_diagonal_mask(8, 12, 4)
    expected = np.zeros((8, 12), np.float32)
    for g in range(4):
        expected[2 * g:2 * g + 2, 3 * g:3 * g + 3] = 1
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("strides,padding,size", [(1, "same", (9, 7)), (2, "valid", (10, 13))])
def test_grouped_conv_trains_as_keras_grouped_convolution(strides, padding, size):
    """Training on a CPU takes the dense block-diagonal form: its outputs and both gradients equal
    Keras' grouped convolution's (XLA) with the same weights; inference is Keras' own call."""
    import tensorflow as tf

    from exfuse_keras.layers.grouped import GroupedConv2D

    x = tf.random.stateless_normal([2, *size, 16], seed=[1, 2])
    kwargs = dict(filters=12, kernel_size=3, strides=strides, padding=padding, groups=4, use_bias=True,
                  bias_initializer="glorot_uniform")
    ours, keras_conv = GroupedConv2D(**kwargs), keras.layers.Conv2D(**kwargs)
    keras_conv.build(x.shape)
    ours.build(x.shape)
    ours.set_weights(keras_conv.get_weights())
    found = {}
    for name, layer in (("ours", ours), ("keras", keras_conv)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.sin(y))
        found[name] = [np.asarray(t) for t in (y, *tape.gradient(loss, [x, layer.kernel, layer.bias]))]
    for a, b in zip(found["ours"], found["keras"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    np.testing.assert_array_equal(np.asarray(ours(x, training=False)), np.asarray(keras_conv(x)))


def test_grouped_conv_round_trips_and_exports_a_grouped_tflite_convolution(tmp_path):
    """A .keras file keeps the class and its outputs; TFLite gets the grouped CONV_2D (filter
    [C_out, 3, 3, C_in / groups]), not the dense training form, and computes Keras' outputs."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from exfuse_keras.layers.grouped import GroupedConv2D

    inputs = keras.Input((12, 12, 16), batch_size=1)
    model = keras.Model(inputs, GroupedConv2D(16, 3, padding="same", groups=4, name="grouped")(inputs))
    x = np.random.default_rng(0).normal(size=(1, 12, 12, 16)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("grouped")) is GroupedConv2D
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    interpreter = Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    interpreter.allocate_tensors()
    shapes = [tuple(t["shape"]) for t in interpreter.get_tensor_details() if len(t["shape"]) == 4]
    assert (16, 3, 3, 4) in shapes and (16, 3, 3, 16) not in shapes
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-4, atol=1e-4 * np.abs(got).max())


def test_resnext_uses_the_grouped_layer_only_where_it_groups():
    cfg = BackboneConfig(blocks=[1, 1, 1, 1], cardinality=4, base_width=4, base_channels=64, stem_channels=8,
                         weights=None)
    from exfuse_keras.layers.grouped import GroupedConv2D

    grouped = [layer.name for layer in build_backbone(cfg).layers if isinstance(layer, GroupedConv2D)]
    assert grouped == [f"conv{s}_block1_2_conv" for s in range(2, 6)]
    plain = build_backbone(dataclasses.replace(cfg, cardinality=1))
    assert not any(isinstance(layer, GroupedConv2D) for layer in plain.layers)
