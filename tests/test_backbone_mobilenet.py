"""MobileNetV3 backbones: the tapped levels' strides, channels and values against keras.applications'
own layers, every ExFuse module on them, LR and other ResNet-only settings refused in one line, the
.keras round trip, and the int8 TFLite file with every op in XNNPACK."""

import keras
import numpy as np
import pytest

from exfuse_keras.backbones.mobilenet import TAPS, build_mobilenet_backbone
from exfuse_keras.config import BackboneConfig, ConfigError, load_config
from exfuse_keras.model import build_model
from tests.helpers import serve_keras_downloads

CHANNELS = {"mobilenetv3_large": (24, 40, 112, 960), "mobilenetv3_small": (16, 24, 48, 576)}


@pytest.mark.parametrize("architecture", sorted(TAPS))
def test_levels_are_keras_applications_layers_at_strides_4_to_32(architecture):
    ours = build_mobilenet_backbone(BackboneConfig(architecture=architecture))
    constructor, taps = TAPS[architecture]
    reference = getattr(keras.applications, constructor)(input_shape=(None, None, 3), include_top=False,
                                                         weights=None, include_preprocessing=False)
    reference.set_weights(ours.get_weights())  # same architecture, same weight order
    expected = keras.Model(reference.input, {level: reference.output if layer is None else
                                             reference.get_layer(layer).output for level, layer in taps.items()})
    images = np.random.default_rng(0).uniform(-1, 1, (1, 64, 96, 3)).astype("float32")
    got, want = ours(images, training=False), expected(images, training=False)
    for (level, stride), channels in zip((("res2", 4), ("res3", 8), ("res4", 16), ("res5", 32)),
                                         CHANNELS[architecture]):
        assert tuple(got[level].shape) == (1, 64 // stride, 96 // stride, channels), level
        np.testing.assert_allclose(got[level].numpy(), want[level].numpy(), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """A keras.applications MobileNetV3Small without top (random, seeded) and its weights file."""
    keras.utils.set_random_seed(3)
    source = keras.applications.MobileNetV3Small(input_shape=(None, None, 3), include_top=False, weights=None,
                                                 include_preprocessing=False)
    path = str(tmp_path_factory.mktemp("weights") / "small.weights.h5")
    source.save_weights(path)
    return source, path


def test_a_legacy_h5_like_the_published_files_loads_offline(small_weights, tmp_path):
    """The files keras.applications publishes (``weights_mobilenet_v3_*_no_top_v2.h5``, what a user
    copies for offline use) are Keras 2 HDF5 weights, read by layer order: the same format here."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    source, _ = small_weights
    path = str(tmp_path / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    images = np.random.default_rng(4).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    got = build_mobilenet_backbone(_small(path))(images, training=False)["res5"]
    np.testing.assert_allclose(got.numpy(), source(images, training=False).numpy(), rtol=1e-5, atol=1e-5)


def _small(weights):
    return BackboneConfig(architecture="mobilenetv3_small", weights=weights)


def test_a_local_weights_file_loads_offline(small_weights):
    source, path = small_weights
    images = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    got = build_mobilenet_backbone(_small(path))(images, training=False)["res5"]
    np.testing.assert_allclose(got.numpy(), source(images, training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_imagenet_weights_go_through_keras_download(small_weights, monkeypatch):
    """``weights: imagenet`` asks keras.applications for its no-top file; here the download
    returns the local one, and the backbone computes what that network computes."""
    from keras.src.applications import mobilenet_v3

    source, path = small_weights
    requested = serve_keras_downloads(monkeypatch, path)
    backbone = build_mobilenet_backbone(_small("imagenet"))
    assert requested == [("weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                          mobilenet_v3.BASE_WEIGHT_PATH + "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5")]
    images = np.random.default_rng(2).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(backbone(images, training=False)["res5"].numpy(),
                               source(images, training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_a_missing_or_mismatching_weights_file_fails_in_one_line(small_weights, tmp_path):
    from exfuse_keras.backbones.weights import WeightsError

    missing = str(tmp_path / "missing.h5")
    with pytest.raises(WeightsError) as info:
        build_mobilenet_backbone(_small(missing))
    assert str(info.value) == (f"model.backbone.weights: file not found: {missing} (expected an .h5 of the "
                               "keras.applications MobileNetV3Small weights (alpha 1.0, without its top))")
    _, path = small_weights  # Small's weights into Large
    with pytest.raises(WeightsError) as info:
        build_mobilenet_backbone(BackboneConfig(architecture="mobilenetv3_large", weights=path))
    message = str(info.value)
    assert message.startswith(f"model.backbone.weights: {path} does not hold the keras.applications "
                              "MobileNetV3Large weights (alpha 1.0, without its top): ") and "\n" not in message


def test_every_module_builds_on_mobilenetv3_at_any_size():
    cfg = load_config("configs/exfuse_mobilenetv3.yaml",
                      ["model.backbone.weights=null", "model.ss.levels=[res2,res3,res4]"])
    model = build_model(cfg)
    names = [layer.name for layer in model.layers]
    assert {"seb_res2", "seb_res3", "seb_res4", "ecre_subpixel", "dap", "ss_head_res2"} <= set(names)
    assert model.get_layer("normalization").mode == "scale"
    for height, width in ((64, 64), (96, 160)):
        out = model.predict(np.zeros((1, height, width, 3), "float32"), verbose=0)
        assert out["logits"].shape == (1, height, width, 21) and out["ecre"].shape == (1, height // 16, width // 16, 21)


def test_the_minimalistic_config_is_the_mobile_config_with_the_minimalistic_backbone():
    """configs/exfuse_mobilenetv3_min.yaml changes one field of exfuse_mobilenetv3.yaml, nothing else."""
    import dataclasses

    minimal = load_config("configs/exfuse_mobilenetv3_min.yaml")
    default = load_config("configs/exfuse_mobilenetv3.yaml")
    assert minimal.model.backbone.minimalistic and not default.model.backbone.minimalistic
    assert dataclasses.asdict(minimal) == dataclasses.asdict(load_config("configs/exfuse_mobilenetv3.yaml",
                                                                         ["model.backbone.minimalistic=true"]))


@pytest.mark.parametrize("sets,message", [
    (["model.backbone.blocks=[8,8,9,8]"], "model.backbone.blocks (layer rearrangement) applies to ResNet/ResNeXt"),
    (["model.backbone.norm=sync_batch"], "model.backbone.norm must be 'batch' for mobilenetv3_large"),
    (["model.backbone.alpha=0.5"], "must be 0.75 or 1.0 with ImageNet weights"),
    (["model.backbone.weights=backbone.keras"], "an .h5 file of the keras.applications mobilenetv3_large"),
    (["model.backbone.preprocessing=caffe"], "must be auto or scale for mobilenetv3_large"),
    (["model.backbone.minimalistic=true", "model.backbone.alpha=0.75"], "1.0 when minimalistic"),
])
def test_resnet_only_settings_are_refused_in_one_line(sets, message):
    with pytest.raises(ConfigError) as info:
        load_config("configs/exfuse_mobilenetv3.yaml", sets)
    assert message in str(info.value) and "\n" not in str(info.value)


def _int8_ops(model):
    """The ops of ``model``'s int8 TFLite file at 64x64 (random calibration), as bench.tflite_ops profiles them."""
    from exfuse_keras.bench import tflite_ops
    from exfuse_keras.export import tflite

    calibration = [np.random.default_rng(k).uniform(0, 255, (1, 64, 64, 3)).astype("float32") for k in range(4)]
    return tflite_ops.profile(tflite.convert(model, (64, 64), "int8", representative=lambda: calibration), repeats=1)


def test_the_quick_start_sized_mobile_model_round_trips_and_exports_to_tflite(tmp_path):
    from exfuse_keras.export import tflite

    keras.utils.set_random_seed(0)
    model = build_model(load_config("configs/quickstart_mobilenetv3.yaml"))
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    model.save(tmp_path / "mobile.keras")
    loaded = keras.saving.load_model(tmp_path / "mobile.keras")
    np.testing.assert_allclose(loaded(images)["logits"].numpy(), model(images)["logits"].numpy(), rtol=1e-5,
                               atol=1e-5)
    logits = model(images, training=False)["logits"].numpy()
    got = tflite.run(tflite.interpreter(tflite.convert(model, (64, 64), "float32")), images)
    assert np.abs(got - logits).max() <= 1e-4 * np.abs(logits).max()
    # int8: XNNPACK has no int8 HARD_SWISH, so the standard network's hard-swishes run TFLite's own
    # kernel (docs/benchmarks.md); everything else is XNNPACK's.
    rows = _int8_ops(model)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "DEPTH_TO_SPACE"} <= {r["op"] for r in rows}
    assert {r["op"] for r in rows if r["kernel"] != "XNNPACK"} <= {"HARD_SWISH", "ADD"}
    assert all(r["kernel"] == "builtin" for r in rows if r["op"] == "HARD_SWISH")


def test_the_minimalistic_mobile_model_runs_every_int8_op_in_xnnpack():
    """ReLU for hard-swish, no squeeze-excite: only an ADD whose random-weight quantisation scales
    fall outside XNNPACK's range may run elsewhere (trained scales do not)."""
    keras.utils.set_random_seed(0)
    model = build_model(load_config("configs/quickstart_mobilenetv3.yaml", ["model.backbone.minimalistic=true"]))
    rows = _int8_ops(model)
    assert "HARD_SWISH" not in {r["op"] for r in rows}
    assert {r["op"] for r in rows if r["kernel"] != "XNNPACK"} <= {"ADD"}
    assert sum(r["kernel"] == "XNNPACK" for r in rows) >= len(rows) - 1


def test_the_benchmarks_minimalistic_model_has_no_hard_swish_and_no_squeeze_excite():
    """bench's ``mobilenetv3_min`` (the 28 ms int8 row of docs/mobile.md) is the shipped mobile
    config with keras.applications' minimalistic backbone; the default one has both."""
    from exfuse_keras.bench.models import benchmark_models

    def parts(model):
        layers = list(model._flatten_layers(include_self=False, recursive=True))
        hard = sum("hard" in str(getattr(layer, "activation", "")) for layer in layers)
        return hard, sum("squeeze_excite" in layer.name for layer in layers)

    (_, cfg, model), (_, cfg_min, model_min) = benchmark_models("no-run", ["mobilenetv3", "mobilenetv3_min"])
    assert cfg_min.model.backbone.minimalistic and cfg_min.model.backbone.weights is None
    assert cfg_min.model.backbone.architecture == cfg.model.backbone.architecture == "mobilenetv3_large"
    assert min(parts(model)) > 0 and parts(model_min) == (0, 0)


def test_mobilenet_settings_are_refused_on_a_resnet():
    with pytest.raises(ConfigError, match=r"model.backbone.minimalistic is a MobileNetV3 setting"):
        load_config("configs/exfuse_resnet101.yaml", ["model.backbone.minimalistic=true"])
    with pytest.raises(ConfigError, match=r"model.backbone.alpha is a MobileNetV3 setting"):
        load_config("configs/exfuse_resnet101.yaml", ["model.backbone.alpha=0.5"])


def test_the_mobile_model_exports_agree_with_keras_in_every_format(tmp_path):
    """SavedModel and TF Serving (masks equal to the Python API's), TFLite float32, float16,
    dynamic range, int8 and int8_io, and ONNX, each against Keras, on the quick-start-sized
    ExFuse-MobileNetV3 with random weights: the tolerances of tests/test_export.py for the formats
    that keep float arithmetic, and logit bounds five times what was measured for those that round
    (of the largest logit: float16 4.0e-4 and dynamic range 7.9e-3 on a 2-core AMD Zen 3; int8 and
    int8_io 2.9e-2, calibrated on 8 random images, on a 2-core Xeon). A wrong input scaling or
    broken quantization misses these by far; argmax agreement on a trained model is
    docs/mobile.md's measurement (near-tied random logits make it meaningless here)."""
    import onnxruntime
    import tensorflow as tf

    from exfuse_keras.export import tflite
    from exfuse_keras.export.onnx import export_onnx
    from exfuse_keras.export.saved_model import export_saved_model
    from exfuse_keras.export.tf_serving import export_tf_serving
    from exfuse_keras.inference import Segmenter
    from tests.test_export import GRAPH, ONNX, TFLITE_FLOAT32

    cfg = load_config("configs/quickstart_mobilenetv3.yaml")
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    logits = model(images, training=False)["logits"].numpy()
    scale = np.abs(logits).max()
    segmenter = Segmenter(model, cfg)
    expected = [segmenter.predict(image) for image in images.astype(np.uint8)]

    saved = tf.saved_model.load(export_saved_model(cfg, model, str(tmp_path / "saved"), with_probabilities=True))
    serving = tf.saved_model.load(export_tf_serving(cfg, model, str(tmp_path / "serving"), version=1,
                                                    with_probabilities=True))
    for loaded in (saved, serving):
        outputs = loaded.signatures["serving_images"](images=tf.constant(images.astype(np.uint8)))
        for k, (mask, probabilities) in enumerate(expected):
            np.testing.assert_array_equal(outputs["mask"][k].numpy(), mask)
            np.testing.assert_allclose(outputs["probabilities"][k].numpy(), probabilities, atol=GRAPH)

    calibration = [rng.uniform(0, 255, (1, 64, 96, 3)).astype("float32") for _ in range(8)]
    bounds = {"float32": TFLITE_FLOAT32, "float16": 2e-3, "dynamic": 0.04, "int8": 0.15, "int8_io": 0.15}
    for quantization, bound in bounds.items():
        representative = (lambda: calibration) if quantization.startswith("int8") else None
        runner = tflite.interpreter(tflite.convert(model, (64, 96), quantization, representative=representative))
        error = max(np.abs(tflite.run(runner, image[None]) - logits[k:k + 1]).max() for k, image in enumerate(images))
        assert error <= bound * scale, (quantization, error / scale)
        if quantization == "int8_io":  # the bound has teeth: pixels fed without the -128 offset miss it
            wrong = max(np.abs(tflite.run(runner, np.clip(image, -128, 127).astype(np.int8)[None])
                               - logits[k:k + 1]).max() for k, image in enumerate(images))
            assert wrong > bound * scale, wrong / scale

    session = onnxruntime.InferenceSession(export_onnx(model, str(tmp_path / "mobile.onnx")),
                                           providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images})
    assert np.abs(got - logits).max() <= ONNX * scale


def test_every_mobile_batchnorm_takes_the_configured_momentum(tmp_path):
    """keras.applications builds them at 0.999; model.backbone.bn_momentum (0.99 by default, as
    the ResNets use) replaces it, and the .keras round trip keeps it."""
    from exfuse_keras.backbones.mobilenet import keras_application

    reference = keras_application(BackboneConfig(architecture="mobilenetv3_small"), None)
    assert {l.momentum for l in reference.layers if isinstance(l, keras.layers.BatchNormalization)} == {0.999}
    for momentum in (0.99, 0.9):
        encoder = build_mobilenet_backbone(BackboneConfig(architecture="mobilenetv3_small", bn_momentum=momentum))
        norms = [l for l in encoder.layers if isinstance(l, keras.layers.BatchNormalization)]
        assert len(norms) > 30 and {l.momentum for l in norms} == {momentum}
    encoder.save(tmp_path / "encoder.keras")
    loaded = keras.saving.load_model(tmp_path / "encoder.keras")
    assert {l.momentum for l in loaded.layers if isinstance(l, keras.layers.BatchNormalization)} == {0.9}
