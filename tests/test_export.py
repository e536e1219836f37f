"""Exports against the Python inference path: SavedModel signatures, bad input, TFLite, ONNX,
evaluate.py on an export.

Tolerances:
- SavedModel signatures against ``Segmenter`` (the same TF ops, traced into the export's graph):
  masks exactly equal, probabilities within ``GRAPH`` = 1e-6 (measured 0).
- TFLite float32 against Keras: max |logit difference| <= ``TFLITE_FLOAT32`` = 1e-4 x max |logit|
  (measured 1.3e-6 on the 600-step fixture, 2-core AMD Zen 3). float16 and dynamic range: argmax
  agreement >= 0.995 and 0.97 (measured 0.9999 and 0.9943, same fixture and CPU). int8: argmax
  agreement with Keras over the 200 val images >= ``INT8_AGREEMENT_FLOOR`` = 0.95 (measured
  0.9796; docs/benchmarks.md, "How closely do the exports agree with Keras?").
- ONNX (onnxruntime) against Keras: max |logit difference| <= 1e-5 x max |logit|.
- evaluate.py on the exported quick-start SavedModel: the same confusion matrix as the Keras model.

Most tests use a tiny untrained ExFuse exported once per module; the quick-start model (trained
once per cache key, tests/quickstart_model.py) serves the TFLite and evaluation tests.
"""

import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from exfuse_keras.config import EvalConfig, config_from_dict
from exfuse_keras.data.pipeline import make_dataset
from exfuse_keras.export import tflite
from exfuse_keras.export.common import logits_model
from exfuse_keras.export.saved_model import MASK_PADDING, SIGNATURES, export_saved_model
from exfuse_keras.inference import Segmenter
from exfuse_keras.inference.loading import load_predictor, load_run
from exfuse_keras.model import build_model
from exfuse_keras.saving import ModelFileError
from tests.helpers import tiny_config_dict

GRAPH = 1e-6
TFLITE_FLOAT32 = 1e-4
ONNX = 1e-5
INT8_AGREEMENT_FLOOR = 0.95
TINY_MAX_SIDE = 96
TTA = {"scales": (0.75, 1.25), "flip": True, "sliding_window": (64, 48)}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def random_image(height, width, seed, channels=3) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(cfg, model, segmenter, SavedModel path, loaded, TTA SavedModel loaded): a tiny untrained ExFuse
    exported with probabilities and max_side 96, single scale and with 2 scales + flip in sliding windows."""
    values = tiny_config_dict()
    values["export"] = {"max_side": TINY_MAX_SIDE}
    cfg = config_from_dict(values)
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    folder = tmp_path_factory.mktemp("tiny_export")
    path = export_saved_model(cfg, model, str(folder / "single"), with_probabilities=True)
    tta_path = export_saved_model(cfg, model, str(folder / "tta"), with_probabilities=True,
                                  protocol=EvalConfig(**TTA))
    return cfg, model, Segmenter(model, cfg), path, tf.saved_model.load(path), tf.saved_model.load(tta_path)


def _assert_matches_segmenter(outputs, arrays, segmenter, **protocol):
    assert outputs["mask"].dtype == tf.uint8
    for k, array in enumerate(arrays):
        mask, probabilities = segmenter.predict(array, **protocol)
        height, width = mask.shape
        assert (int(outputs["height"][k]), int(outputs["width"][k])) == (height, width)
        np.testing.assert_array_equal(outputs["mask"][k, :height, :width].numpy(), mask)
        np.testing.assert_allclose(outputs["probabilities"][k, :height, :width].numpy(), probabilities, atol=GRAPH)
        assert np.all(outputs["mask"][k, height:].numpy() == MASK_PADDING)
        assert np.all(outputs["mask"][k, :, width:].numpy() == MASK_PADDING)
        assert np.all(outputs["probabilities"][k, height:].numpy() == 0)


def test_the_export_has_every_signature_and_its_config(tiny):
    cfg, _, _, path, loaded, _ = tiny
    assert set(loaded.signatures) == set(SIGNATURES)
    inputs = {name: loaded.signatures[name].structured_input_signature[1] for name in SIGNATURES}
    assert inputs["serving_default"]["image_bytes"].dtype == tf.string
    assert inputs["serving_images"]["images"].dtype == tf.uint8
    assert inputs["serving_images_float32"]["images"].dtype == tf.float32
    assert inputs["serving_examples"]["examples"].dtype == tf.string
    outputs = loaded.signatures["serving_default"].structured_outputs
    assert set(outputs) == {"mask", "height", "width", "probabilities"}
    metadata = json.loads(open(os.path.join(path, "assets.extra", "export.json")).read())
    assert metadata["class_names"] == cfg.data.class_names and metadata["max_side"] == TINY_MAX_SIDE
    assert metadata["protocol"] == {"scales": [1.0], "flip": False, "sliding_window": None}


def test_the_export_stores_each_weight_of_the_main_output_once(tiny):
    _, model, _, path, _, _ = tiny
    # Keras 3.15's model.export (and ExportArchive.track) store every weight twice; the
    # auxiliary heads must be left out too.
    weights = sum(v.numpy().nbytes for v in logits_model(model).variables)
    assert weights < sum(v.numpy().nbytes for v in model.variables)
    folder = os.path.join(path, "variables")
    stored = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
    assert weights <= stored <= 1.1 * weights + 65536, (weights, stored)


def test_serving_default_matches_the_python_api_on_a_batch_of_mixed_sizes(tiny):
    _, _, segmenter, _, loaded, _ = tiny
    arrays = [random_image(50, 70, 1), random_image(33, 90, 2), random_image(TINY_MAX_SIDE, 17, 3),
              random_image(1, 1, 4), random_image(40, 40, 5, channels=1), random_image(31, 29, 6, channels=4)]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant([png(a) for a in arrays]))
    assert tuple(outputs["mask"].shape) == (len(arrays), TINY_MAX_SIDE, 90)
    # Gray images are read as RGB, RGBA images lose their alpha: what the Python API does too.
    _assert_matches_segmenter(outputs, arrays, segmenter)


def test_serving_default_decodes_jpeg_as_tensorflow_does(tiny):
    _, _, segmenter, _, loaded, _ = tiny
    encoded = [jpeg(random_image(45, 61, 7)), jpeg(random_image(64, 32, 8))]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    _assert_matches_segmenter(outputs, [tf.io.decode_jpeg(data, channels=3).numpy() for data in encoded], segmenter)


def test_image_tensor_signatures_match_the_python_api(tiny):
    _, _, segmenter, _, loaded, _ = tiny
    arrays = np.stack([random_image(37, 53, 10), random_image(37, 53, 11)])
    uint8 = loaded.signatures["serving_images"](images=tf.constant(arrays))
    float32 = loaded.signatures["serving_images_float32"](images=tf.constant(arrays.astype(np.float32)))
    _assert_matches_segmenter(uint8, list(arrays), segmenter)
    _assert_matches_segmenter(float32, list(arrays), segmenter)


def test_example_signature_matches_serving_default(tiny):
    _, _, segmenter, _, loaded, _ = tiny
    arrays = [random_image(20, 30, 12), random_image(44, 12, 13)]
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png(a)])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"]))})).SerializeToString()
        for a in arrays]
    outputs = loaded.signatures["serving_examples"](examples=tf.constant(examples))
    _assert_matches_segmenter(outputs, arrays, segmenter)


def test_network_logits_signature_is_the_bare_network(tiny):
    _, model, _, _, loaded, _ = tiny
    images = np.random.default_rng(14).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    logits = loaded.signatures["network_logits"](images=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(logits, model(images, training=False)["logits"].numpy(), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 32"):
        loaded.signatures["network_logits"](images=tf.zeros([1, 40, 64, 3]))


def test_multiscale_flip_sliding_window_export_runs_the_same_protocol_as_the_python_api(tiny):
    _, _, segmenter, _, single, tta = tiny
    arrays = [random_image(41, 57, 15), random_image(90, 22, 16)]  # 90 rows: two windows
    encoded = tf.constant([png(a) for a in arrays])
    outputs = tta.signatures["serving_default"](image_bytes=encoded)
    _assert_matches_segmenter(outputs, arrays, segmenter, **TTA)
    # The comparison can fail: the single-scale export's probabilities differ from these.
    plain = single.signatures["serving_default"](image_bytes=encoded)
    assert np.abs(plain["probabilities"].numpy() - outputs["probabilities"].numpy()).max() > 1e-3


BAD_ENCODED = {
    "not an image": (b"certainly not an image", "Unknown image file format"),
    "empty string": (b"", "empty string"),
    "truncated PNG": (png(random_image(20, 20, 0))[:40], "PNG"),
    "PNG over max_side": (png(random_image(TINY_MAX_SIDE + 1, 8, 0)), "max_side=96"),
    "JPEG over max_side": (jpeg(random_image(8, TINY_MAX_SIDE + 1, 0)), "max_side=96"),
}


def _huge_png_header() -> bytes:
    """A small PNG whose header claims 40000 x 40000 pixels (4.8 GB decoded): refused from the header."""
    data = bytearray(png(random_image(8, 8, 0)))
    data[16:24] = (40000).to_bytes(4, "big") * 2
    return bytes(data)


@pytest.mark.parametrize("name", list(BAD_ENCODED) + ["decompression bomb"])
def test_bad_encoded_images_raise_invalid_argument(tiny, name):
    _, _, _, _, loaded, _ = tiny
    data, message = BAD_ENCODED[name] if name in BAD_ENCODED else (_huge_png_header(), "max_side=96")
    good = png(random_image(10, 10, 1))
    for batch in ([data], [good, data]):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            loaded.signatures["serving_default"](image_bytes=tf.constant(batch))


def test_bad_batches_and_tensors_raise_invalid_argument(tiny):
    _, _, _, _, loaded, _ = tiny
    signatures = loaded.signatures
    cases = [
        (lambda: signatures["serving_default"](image_bytes=tf.constant([], tf.string)), "batch is empty"),
        (lambda: signatures["serving_images"](images=tf.zeros([0, 32, 32, 3], tf.uint8)), "batch is empty"),
        (lambda: signatures["serving_images"](images=tf.zeros([1, 0, 32, 3], tf.uint8)), "at least 1x1"),
        (lambda: signatures["serving_images"](images=tf.zeros([1, TINY_MAX_SIDE + 1, 8, 3], tf.uint8)),
         "max_side=96"),
        (lambda: signatures["serving_images_float32"](images=tf.fill([1, 8, 8, 3], 256.0)), r"0\.\.255"),
        (lambda: signatures["serving_images_float32"](images=tf.fill([1, 8, 8, 3], float("nan"))), r"0\.\.255"),
        (lambda: signatures["serving_examples"](examples=tf.constant([tf.train.Example().SerializeToString()])),
         "image/encoded"),
        (lambda: signatures["serving_examples"](examples=tf.constant([b"not a tf.Example"])), "parse"),
    ]
    for call, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call()


def test_edge_sizes_get_correct_answers(tiny):
    _, _, segmenter, _, loaded, _ = tiny
    arrays = [random_image(1, 1, 20), random_image(TINY_MAX_SIDE, TINY_MAX_SIDE, 21), random_image(1, 64, 22)]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant([png(a) for a in arrays]))
    _assert_matches_segmenter(outputs, arrays, segmenter)


def test_existing_output_is_refused_unless_overwritten(tiny):
    cfg, model, _, path, _, _ = tiny
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_saved_model(cfg, model, path)


# ---- TFLite --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quickstart(quickstart_run):
    cfg, model = load_run(quickstart_run["run_dir"], overrides=[f"data.root={quickstart_run['data_root']}"])
    return quickstart_run, cfg, model


@pytest.fixture(scope="module")
def quickstart_tflite(quickstart, tmp_path_factory):
    """The four TFLite files of the quick-start model at 128x128 (its image size), through export.py."""
    from exfuse_keras.export.cli import main

    run, _, _ = quickstart
    folder = tmp_path_factory.mktemp("tflite")
    status = main(["--weights", run["run_dir"], "--set", f"data.root={run['data_root']}", "--format", "tflite",
                   "--output", str(folder), "--tflite-quantization", ",".join(tflite.QUANTIZATIONS),
                   "--tflite-size", "128,128", "--calibration-batches", "4"])
    assert status == 0
    return folder


@pytest.fixture(scope="module")
def val_logits(quickstart):
    """(images float32 [1, 128, 128, 3], Keras logits) of the 200 val images."""
    _, cfg, model = quickstart
    pairs = []
    for images, _ in make_dataset(cfg, "val", training=False, batch_size=1):
        pairs.append((images.numpy(), model(images, training=False)["logits"].numpy()))
    return pairs


def test_tflite_files_use_builtin_ops_only_and_are_described(quickstart_tflite):
    metadata = json.loads((quickstart_tflite / "export.json").read_text())
    assert metadata["input"]["shape"] == [1, 128, 128, 3] and metadata["num_classes"] == 6
    assert set(metadata["files"]) == {f"exfuse_{q}.tflite" for q in tflite.QUANTIZATIONS}
    for quantization in tflite.QUANTIZATIONS:
        operators = tflite.operator_names((quickstart_tflite / f"exfuse_{quantization}.tflite").read_bytes())
        assert operators and all(name.isupper() and not name.startswith("FLEX") for name in operators), operators
        assert "CUSTOM" not in operators and "READ_VARIABLE" not in operators, operators
        assert "CONV_2D" in operators and "DEPTH_TO_SPACE" in operators


class _CumulativeProduct(keras.layers.Layer):
    """An op with no TFLite builtin, only a Flex (TensorFlow) kernel."""

    def call(self, x):
        return tf.math.cumprod(x, axis=1)


def test_the_operator_check_sees_flex_ops():
    """The op-list check above can fail: converted with Flex ops allowed, a TensorFlow-only op shows
    as a Flex custom op; and the export's builtins-only converter refuses the model."""
    inputs = keras.Input((32, 32, 3), batch_size=1)
    model = keras.Model(inputs, _CumulativeProduct()(inputs))
    function = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    assert any(name.startswith("Flex") for name in tflite.operator_names(converter.convert()))
    with pytest.raises(Exception, match="Cumprod"):
        tflite.convert(model, (32, 32))


def test_tflite_float32_logits_match_keras(quickstart_tflite, val_logits):
    runner = tflite.interpreter(quickstart_tflite / "exfuse_float32.tflite")
    worst = 0.0
    for images, logits in val_logits[:20]:
        got = tflite.run(runner, images)
        worst = max(worst, np.abs(got - logits).max() / np.abs(logits).max())
    print(f"\nTFLite float32: max |logit difference| / max |logit| = {worst:.2e} (20 val images)")
    assert worst <= TFLITE_FLOAT32


@pytest.mark.parametrize("quantization,floor", [("float16", 0.995), ("dynamic", 0.97)])
def test_tflite_float16_and_dynamic_range_agree_with_keras(quickstart_tflite, val_logits, quantization, floor):
    runner = tflite.interpreter(quickstart_tflite / f"exfuse_{quantization}.tflite")
    agreement = np.mean([(tflite.run(runner, images).argmax(-1) == logits.argmax(-1)).mean()
                         for images, logits in val_logits[:40]])
    print(f"\nTFLite {quantization}: argmax agreement with Keras {agreement:.4f} (40 val images)")
    assert agreement >= floor


def test_tflite_int8_argmax_agrees_with_keras_on_the_val_split(quickstart_tflite, val_logits):
    runner = tflite.interpreter(quickstart_tflite / "exfuse_int8.tflite")
    details = runner.get_tensor_details()
    assert sum(d["dtype"] == np.int8 for d in details) > len(details) // 2  # really integer inside
    assert runner.get_input_details()[0]["dtype"] == np.float32  # float in, float out (tflite.py doc)
    agreement = np.mean([(tflite.run(runner, images).argmax(-1) == logits.argmax(-1)).mean()
                         for images, logits in val_logits])
    print(f"\nTFLite int8: argmax agreement with Keras {agreement:.4f} over {len(val_logits)} val images "
          f"(floor {INT8_AGREEMENT_FLOOR})")
    assert len(val_logits) == 200
    assert agreement >= INT8_AGREEMENT_FLOOR


def test_tflite_int8_io_takes_pixels_and_gives_int8_logits_whose_argmax_agrees(quickstart_tflite, val_logits):
    """int8_io: int8 input that is the pixel value less 128 (scale 1, zero point -128), int8
    output; its argmax as it comes equals the dequantised logits' and agrees with Keras as int8's does."""
    runner = tflite.interpreter(quickstart_tflite / "exfuse_int8_io.tflite")
    (inputs,), (outputs,) = runner.get_input_details(), runner.get_output_details()
    assert inputs["dtype"] == np.int8 and inputs["quantization"] == (1.0, -128)
    assert outputs["dtype"] == np.int8 and outputs["quantization"][0] > 0
    operators = tflite.operator_names((quickstart_tflite / "exfuse_int8_io.tflite").read_bytes())
    assert "QUANTIZE" not in operators and "DEQUANTIZE" not in operators, operators
    agreement = []
    for images, logits in val_logits:
        raw = tflite.run(runner, (images - 128).astype(np.int8), raw=True)
        assert raw.dtype == np.int8
        scale, zero_point = outputs["quantization"]
        np.testing.assert_allclose(tflite.run(runner, images), (raw.astype(np.float32) - zero_point) * scale)
        agreement.append((raw.argmax(-1) == logits.argmax(-1)).mean())
    print(f"\nTFLite int8_io: argmax agreement with Keras {np.mean(agreement):.4f} over {len(agreement)} val images")
    assert np.mean(agreement) >= INT8_AGREEMENT_FLOOR
    metadata = json.loads((quickstart_tflite / "export.json").read_text())["files"]["exfuse_int8_io.tflite"]
    assert (metadata["input_dtype"], metadata["output_dtype"]) == ("int8", "int8")


# ---- ONNX ----------------------------------------------------------------------------------------


def test_onnx_export_matches_keras_with_onnxruntime(tiny, tmp_path):
    import onnxruntime

    from exfuse_keras.export.onnx import export_onnx

    _, model, _, _, _, _ = tiny
    path = export_onnx(model, str(tmp_path / "tiny.onnx"))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    for shape in [(1, 64, 96, 3), (2, 128, 32, 3)]:
        images = np.random.default_rng(shape[1]).uniform(0, 255, shape).astype(np.float32)
        expected = model(images, training=False)["logits"].numpy()
        (got,) = session.run(None, {"images": images})
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= ONNX * np.abs(expected).max()


# ---- export.py and evaluate.py on an export ---------------------------------------------------------


@pytest.fixture(scope="module")
def quickstart_saved_model(quickstart, tmp_path_factory):
    from exfuse_keras.export.cli import main

    run, _, _ = quickstart
    path = str(tmp_path_factory.mktemp("quickstart_export") / "saved_model")
    assert main(["--weights", run["run_dir"], "--set", f"data.root={run['data_root']}", "--format", "saved_model",
                 "--output", path]) == 0
    return path


def test_quickstart_export_serving_default_matches_the_python_api(quickstart, quickstart_saved_model):
    _, cfg, model = quickstart
    loaded = tf.saved_model.load(quickstart_saved_model)
    signature = loaded.signatures["serving_default"]
    assert set(signature.structured_outputs) == {"mask", "height", "width"}  # no --with-probabilities
    arrays = [images[0].numpy().astype(np.uint8) for images, _ in make_dataset(cfg, "val", training=False,
                                                                              batch_size=1).take(8)]
    arrays[1] = arrays[1][:100, :75]  # mixed sizes in one request
    outputs = signature(image_bytes=tf.constant([png(a) for a in arrays]))
    segmenter = Segmenter(model, cfg)
    for k, array in enumerate(arrays):
        mask, _ = segmenter.predict(array)
        height, width = mask.shape
        np.testing.assert_array_equal(outputs["mask"][k, :height, :width].numpy(), mask)
    assert len(np.unique(outputs["mask"].numpy())) > 2  # a trained model: several classes found


def test_evaluate_on_the_exported_saved_model_equals_the_keras_model(quickstart, quickstart_saved_model, tmp_path):
    from exfuse_keras.evaluation.evaluate import evaluate, main

    run, cfg, model = quickstart
    cfg_export, predictor = load_predictor(quickstart_saved_model)
    assert cfg_export.data.num_classes == cfg.data.num_classes and callable(predictor)
    other = cfg.data.num_classes + 1  # another dataset's config: refused, not a silently wrong confusion matrix
    with pytest.raises(ModelFileError, match=rf"predicts {cfg.data.num_classes} classes but .*config.yaml \(with "
                                             rf"the --set overrides\) has data.num_classes = {other}"):
        load_predictor(quickstart_saved_model, overrides=[f"data.num_classes={other}",
                                                          f"data.class_names={[f'c{i}' for i in range(other)]}"])
    report = tmp_path / "report.json"
    assert main(["--weights", quickstart_saved_model, "--output", str(report)]) == 0
    exported = json.loads(report.read_text())
    keras_scores = evaluate(cfg, model, "val", progress=False)
    print(f"\nquick start val mIoU: Keras {keras_scores['miou']:.4f}, exported SavedModel {exported['miou']:.4f}")
    assert exported["images"] == keras_scores["images"] == 200
    np.testing.assert_array_equal(np.array(exported["confusion_matrix"]), keras_scores["confusion_matrix"])
    assert exported["miou"] == pytest.approx(keras_scores["miou"], abs=1e-12)
    assert exported["miou"] == pytest.approx(run["val_miou"], abs=1e-4)


def test_export_cli_refuses_bad_requests_in_one_line(quickstart, tmp_path, capsys):
    from exfuse_keras.export.cli import main

    run, _, _ = quickstart
    base = ["--weights", run["run_dir"], "--set", f"data.root={run['data_root']}"]
    cases = [
        (["--format", "tflite", "--tta"], "--tta: only SavedModel exports"),
        (["--format", "tflite", "--tflite-size", "100,128"], "multiples of 32"),
        (["--format", "tf_serving", "--model-name", "bad/name"], "--model-name"),
        (["--format", "saved_model", "--set", "export.max_side=0"], "export.max_side"),
    ]
    for extra, message in cases:
        assert main(base + extra + ["--output", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
    assert main(["--weights", str(tmp_path / "nothing"), "--format", "onnx", "--output", str(tmp_path)]) == 2
    assert "no best.keras" in capsys.readouterr().err


def test_the_agreement_benchmark_matches_the_tests_own_count(quickstart, quickstart_tflite, val_logits, tmp_path,
                                                             capsys):
    """``python -m exfuse_keras.bench.tflite_agreement`` (docs/benchmarks.md's int8 figure) gives
    the agreement computed here from the fixture's own Keras logits."""
    from exfuse_keras.bench import tflite_agreement

    run, _, _ = quickstart
    files = [str(quickstart_tflite / "exfuse_int8.tflite"), str(quickstart_tflite / "exfuse_float16.tflite")]
    report = tmp_path / "agreement.json"
    assert tflite_agreement.main(files + ["--weights", run["run_dir"], "--set", f"data.root={run['data_root']}",
                                          "--images", "12", "--json", str(report)]) == 0
    got = json.loads(report.read_text())
    assert got["images"] == 12 and got["split"] == "val"
    for path in files:
        runner = tflite.interpreter(path)
        expected = np.mean([(tflite.run(runner, images).argmax(-1) == logits.argmax(-1)).mean()
                            for images, logits in val_logits[:12]])
        assert abs(got["agreement"][os.path.basename(path)] - expected) < 1e-9
    assert tflite_agreement.main([str(tmp_path / "missing.tflite"), "--weights", run["run_dir"]]) == 2
    assert "missing.tflite: no such .tflite file" in capsys.readouterr().err


def test_int8_calibration_draws_a_bar_on_a_terminal_only(tmp_path, monkeypatch):
    """export.py's long steps show tqdm bars to a person and write nothing into a log."""
    import sys

    values = tiny_config_dict()
    values["data"].update(dataset="shapes", root=str(tmp_path / "shapes"), num_classes=6,
                          class_names=["bg", "disc", "square", "triangle", "ring", "bar"],
                          synthetic={"size": 64, "num_train": 8, "num_val": 2})
    values["train"] = {"batch_size": 2}
    cfg = config_from_dict(values)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, drawn in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        images = list(tflite.calibration_images(cfg, (64, 64), batches=3))
        assert len(images) == 6 and all(image.shape == (1, 64, 64, 3) for image in images)
        assert ("int8 calibration" in stream.getvalue() and "3/3" in stream.getvalue()) is drawn, stream.getvalue()
