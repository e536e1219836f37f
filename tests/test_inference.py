"""Test-time augmentation, sliding windows, the Segmenter API and predict.py, on toy models.

Tolerances (float32 throughout):
- ``EXACT``: the same computation reached two ways (TTA at scale 1 without flip against the
  model itself): 1e-6.
- ``MIRRORED``: flip TTA of a flip-equivariant model against plain inference: 1e-5 (the
  convolutions sum a mirrored image in another order; 1.1e-6 seen where TensorFlow runs them
  with oneDNN, on an AMD EPYC Zen 5).
- ``SLIDING``: sliding windows against the whole image for a model whose receptive field fits
  in the discarded window margin: 1e-5 (the weighted average of equal values rounds).
- ``PER_PIXEL_MULTISCALE``: multi-scale TTA of a per-pixel model on a smooth image against plain
  inference: bilinear down/up-sampling of a smooth image is not the identity, so probabilities
  differ by a little: at most 0.01 per pixel, 0.001 on average (measured 0.0025 / 4e-5; a
  random image gives 0.57).
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from exfuse_keras.config import ConfigError, config_from_dict, save_config
from exfuse_keras.inference import Segmenter, load_image
from exfuse_keras.inference.sliding import predict_sliding, window_starts
from exfuse_keras.inference.tta import PAPER_SCALES, logits_function, predict_probabilities
from exfuse_keras.model import build_model
from tests.helpers import tiny_config_dict

EXACT = 1e-6
MIRRORED = 1e-5
SLIDING = 1e-5
PER_PIXEL_MULTISCALE = (0.01, 0.001)  # max, mean absolute probability difference
NUM_CLASSES = 5
PALETTE = [[0, 0, 0], [250, 10, 10], [10, 250, 10], [10, 10, 250], [200, 200, 20]]


def _toy_config():
    config = tiny_config_dict()
    config["data"]["palette"] = PALETTE
    return config_from_dict(config)


def _conv_model(kernel_sizes=(3, 3), seed=0, symmetric=False, bias=True):
    """A fully convolutional toy: 'same' convolutions with ReLU between, NUM_CLASSES logits.

    Receptive-field radius: sum of (k - 1) / 2. ``symmetric`` mirrors every kernel left-right
    (so the model commutes with a horizontal flip).
    """
    rng = np.random.default_rng(seed)
    inputs = keras.Input((None, None, 3))
    x = inputs
    layers = []
    for i, k in enumerate(kernel_sizes):
        last = i == len(kernel_sizes) - 1
        layer = keras.layers.Conv2D(NUM_CLASSES if last else 8, k, padding="same", use_bias=bias,
                                    activation=None if last else "relu")
        x = layer(x)
        layers.append(layer)
    model = keras.Model(inputs, x)
    for layer in layers:
        weights = [rng.standard_normal(w.shape).astype("float32") * 0.05 for w in layer.get_weights()]
        if symmetric:
            weights[0] = (weights[0] + weights[0][:, ::-1]) / 2
        layer.set_weights(weights)
    return model


def _smooth_image(height, width):
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([127 + 100 * np.sin(x / width * 2.0 + 0.3), 127 + 90 * np.cos(y / height * 2.5),
                     127 + 80 * np.sin((x + y) / (height + width) * 3.0)], -1)[None].astype(np.float32)


@pytest.fixture(scope="module")
def tiny_exfuse():
    cfg = _toy_config()
    keras.utils.set_random_seed(0)
    return cfg, build_model(cfg)


def test_tta_at_scale_one_without_flip_is_plain_inference(tiny_exfuse):
    cfg, model = tiny_exfuse
    image = np.random.default_rng(1).uniform(0, 255, (1, 50, 70, 3)).astype(np.float32)
    # Independent: pad to 64x96 with the mean colour in numpy, run the model, crop, softmax.
    padded = np.empty((1, 64, 96, 3), np.float32)
    padded[:] = np.asarray(cfg.data.mean_rgb, np.float32)
    padded[:, :50, :70] = image
    logits = model(padded, training=False)["logits"].numpy()[:, :50, :70].astype(np.float64)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)

    got = predict_probabilities(logits_function(model), image, (1.0,), False, cfg.data.mean_rgb).numpy()
    np.testing.assert_allclose(got, expected, atol=EXACT)
    mask, probabilities = Segmenter(model, cfg).predict(image[0])
    np.testing.assert_allclose(probabilities, expected[0], atol=EXACT)
    np.testing.assert_array_equal(mask, logits[0].argmax(-1))


def test_flip_tta_of_a_flip_equivariant_model_is_plain_inference():
    image = np.random.default_rng(2).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    symmetric = logits_function(_conv_model(symmetric=True))
    plain = predict_probabilities(symmetric, image, (1.0,), False).numpy()
    flipped = predict_probabilities(symmetric, image, (1.0,), True).numpy()
    np.testing.assert_allclose(flipped, plain, atol=MIRRORED)
    # The check can fail: a model with asymmetric kernels does change under flip TTA.
    asymmetric = logits_function(_conv_model(symmetric=False))
    difference = np.abs(predict_probabilities(asymmetric, image, (1.0,), True).numpy()
                        - predict_probabilities(asymmetric, image, (1.0,), False).numpy()).max()
    assert difference > 1e-3


def test_multiscale_tta_of_a_per_pixel_model_is_close_to_plain_inference():
    logits_fn = logits_function(_conv_model(kernel_sizes=(1, 1), seed=3))
    image = _smooth_image(70, 90)
    plain = predict_probabilities(logits_fn, image, (1.0,), False).numpy()
    multiscale = predict_probabilities(logits_fn, image, (0.5, 0.75, 1.25, 1.75), True).numpy()
    difference = np.abs(multiscale - plain)
    assert difference.max() <= PER_PIXEL_MULTISCALE[0] and difference.mean() <= PER_PIXEL_MULTISCALE[1], \
        (difference.max(), difference.mean())
    np.testing.assert_allclose(multiscale.sum(-1), 1.0, atol=1e-5)
    # Sensitivity: the same views of a random (non-smooth) image differ far more.
    noisy = np.random.default_rng(4).uniform(0, 255, image.shape).astype(np.float32)
    noisy_difference = np.abs(predict_probabilities(logits_fn, noisy, (0.5, 0.75, 1.25, 1.75), True).numpy()
                              - predict_probabilities(logits_fn, noisy, (1.0,), False).numpy())
    assert noisy_difference.max() > PER_PIXEL_MULTISCALE[0]


def test_window_starts_cover_the_axis_and_end_at_the_border():
    assert window_starts(tf.constant(100), 32, 24).numpy().tolist() == [0, 24, 48, 68]
    assert window_starts(tf.constant(32), 32, 24).numpy().tolist() == [0]
    assert window_starts(tf.constant(80), 32, 24).numpy().tolist() == [0, 24, 48]
    assert window_starts(tf.constant(81), 32, 32).numpy().tolist() == [0, 32, 49]


@pytest.mark.parametrize("size, multiple", [((70, 100), 1), ((32, 90), 1), ((64, 96), 32), ((20, 25), 32)])
def test_sliding_window_equals_whole_image_when_the_receptive_field_fits_the_margin(size, multiple):
    # Two 3x3 convolutions: receptive-field radius 2. crop 32, stride 24: margin (32 - 24) / 2 = 4.
    # Bias-free with a zero fill, and the same padding either way: none (multiple 1) for images
    # larger than the crop, to 32 for one smaller (its canvas is the 32x32 crop), so beyond the
    # image both see the convolutions' own zeros.
    logits_fn = logits_function(_conv_model(bias=False, seed=5))
    image = np.random.default_rng(6).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    zero = (0.0, 0.0, 0.0)
    whole = predict_probabilities(logits_fn, image, (1.0,), False, fill=zero, multiple=multiple).numpy()
    sliding = predict_sliding(logits_fn, image, crop=32, stride=24, fill=zero, multiple=multiple).numpy()
    assert sliding.shape == whole.shape
    np.testing.assert_allclose(sliding, whole, atol=SLIDING)
    if min(size) > 32:
        # Sensitivity: averaging whole windows (margin 0) mixes in their context-starved edges.
        averaged = predict_sliding(logits_fn, image, crop=32, stride=24, fill=zero, multiple=multiple,
                                   margin=0).numpy()
        assert np.abs(averaged - whole).max() > 1e-3


def test_sliding_window_runs_inside_a_graph_and_rejects_bad_windows():
    logits_fn = logits_function(_conv_model(bias=False, seed=5))
    image = np.random.default_rng(7).uniform(0, 255, (1, 45, 77, 3)).astype(np.float32)
    graph = tf.function(lambda x: predict_sliding(logits_fn, x, 32, 16, (1.0, 1.5), True),
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    np.testing.assert_allclose(graph(image).numpy(),
                               predict_sliding(logits_fn, image, 32, 16, (1.0, 1.5), True).numpy(), atol=EXACT)
    with pytest.raises(ValueError, match="stride <= crop"):
        predict_sliding(logits_fn, image, 32, 40)
    with pytest.raises(ValueError, match="margin"):
        predict_sliding(logits_fn, image, 32, 16, margin=9)


@pytest.fixture(scope="module")
def toy_segmenter():
    return Segmenter(_conv_model(seed=8), _toy_config())


def test_segmenter_returns_a_mask_and_probabilities_at_the_image_size(toy_segmenter):
    image = np.random.default_rng(9).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mask, probabilities = toy_segmenter.predict(image)
    assert mask.shape == (37, 53) and mask.dtype == np.uint8
    assert probabilities.shape == (37, 53, NUM_CLASSES) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(mask, probabilities.argmax(-1))
    tta_mask, tta_probabilities = toy_segmenter.predict(image, tta=True)
    assert tta_mask.shape == (37, 53)
    expected = predict_probabilities(logits_function(toy_segmenter.model), image[None].astype(np.float32),
                                     PAPER_SCALES, True, toy_segmenter.cfg.data.mean_rgb).numpy()[0]
    np.testing.assert_allclose(tta_probabilities, expected, atol=EXACT)
    window_mask, _ = toy_segmenter.predict(image, sliding_window=(32, 16))
    assert window_mask.shape == (37, 53)


def test_segmenter_accepts_every_image_form_alike(toy_segmenter, tmp_path):
    rng = np.random.default_rng(10)
    rgb = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (30, 41), dtype=np.uint8)
    _, reference = toy_segmenter.predict(rgb)
    _, gray_reference = toy_segmenter.predict(np.repeat(gray[..., None], 3, -1))
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.concatenate([rgb, rng.integers(0, 256, (30, 41, 1), dtype=np.uint8)], -1)
    same_as_rgb = [rgb.astype(np.float32), rgb.astype(np.float64), rgb.astype(np.int64), rgba, Image.fromarray(rgb),
                   Image.fromarray(rgba), tf.constant(rgb), str(tmp_path / "rgb.png"), tmp_path / "rgb.png"]
    for form in same_as_rgb:
        np.testing.assert_array_equal(toy_segmenter.predict(form)[1], reference)
    for form in (gray, gray[..., None], Image.fromarray(gray), gray.astype(np.float32)):
        np.testing.assert_array_equal(toy_segmenter.predict(form)[1], gray_reference)
    results = toy_segmenter.predict_batch([rgb, gray, rgb])
    assert [r[0].shape for r in results] == [(30, 41)] * 3
    # A batch of three may round differently from a batch of one.
    np.testing.assert_allclose(results[0][1], reference, atol=EXACT)
    np.testing.assert_allclose(results[1][1], gray_reference, atol=EXACT)


def test_segmenter_follows_the_exif_orientation_of_a_photo(toy_segmenter, tmp_path):
    image = Image.fromarray(np.random.default_rng(11).integers(0, 256, (20, 36, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    image.save(tmp_path / "photo.jpg", exif=exif.tobytes())
    assert toy_segmenter.predict(tmp_path / "photo.jpg")[0].shape == (36, 20)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8, 2), np.uint8), r"expected \[H, W\] gray, \[H, W, 1\], \[H, W, 3\] RGB or \[H, W, 4\] RGBA, "
                                    r"got shape \(8, 8, 2\)"),
    (np.zeros((1, 8, 8, 3), np.uint8), r"got shape \(1, 8, 8, 3\)"),
    (np.zeros(8, np.uint8), r"got shape \(8,\)"),
    (np.zeros((0, 8, 3), np.uint8), "empty image"),
    (np.zeros((8, 8, 3), bool), "integer or float image with values 0-255, got dtype bool"),
    (np.full((8, 8), 1000, np.uint16), "values in 0-255, got 1000..1000"),
    (np.full((8, 8, 3), -1.0, np.float32), "values in 0-255"),
    (np.full((8, 8, 3), np.nan, np.float32), "values in 0-255"),
    ("not an image at all", "no such image file"),
])
def test_bad_images_fail_with_one_line_naming_what_was_expected(toy_segmenter, bad, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        toy_segmenter.predict(bad)
    assert "\n" not in str(error.value)


def test_an_unreadable_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg: not a readable image") as error:
        load_image(path)
    assert "\n" not in str(error.value)


def test_an_image_over_pillows_pixel_guard_says_how_to_allow_it(tmp_path, monkeypatch):
    path = tmp_path / "aerial.png"
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow refuses above twice this: 1,200 px here
    with pytest.raises(ValueError, match=r"aerial\.png: too large for Pillow's default guard \(Image size "
                                         r"\(1200 pixels\).*raise PIL\.Image\.MAX_IMAGE_PIXELS") as error:
        load_image(path)
    assert "\n" not in str(error.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert load_image(path).shape == (40, 30, 3)


def _toy_run(folder, seed):
    """A run folder (config.yaml + best.keras) of a toy model; returns (folder, config, model)."""
    cfg = _toy_config()
    model = _conv_model(seed=seed)
    folder.mkdir()
    save_config(cfg, str(folder / "config.yaml"))
    model.save(str(folder / "best.keras"))
    return folder, cfg, model


def test_segmenter_loads_a_run_folder_or_a_keras_file(tmp_path):
    run, cfg, model = _toy_run(tmp_path / "run", seed=12)
    image = np.random.default_rng(13).uniform(0, 255, (33, 40, 3)).astype(np.float32)
    expected = Segmenter(model, cfg).predict(image)[1]
    np.testing.assert_allclose(Segmenter.load(run).predict(image)[1], expected, atol=EXACT)
    loaded = Segmenter.load(str(run / "best.keras"), config=str(run / "config.yaml"))
    np.testing.assert_allclose(loaded.predict(image)[1], expected, atol=EXACT)
    assert loaded.palette.tolist() == PALETTE
    with pytest.raises(ConfigError, match="pass --config"):
        Segmenter.load(str(run / "best.keras"))
    with pytest.raises(FileNotFoundError, match="no best.keras"):
        Segmenter.load(str(tmp_path))


def test_predict_cli_writes_palette_masks_and_overlays_at_the_original_size(tmp_path, capsys):
    from exfuse_keras.inference.predict import main

    run, cfg, model = _toy_run(tmp_path / "run", seed=14)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(15)
    sizes = {"a.png": (40, 57), "b.jpg": (64, 30), "c.bmp": (21, 21)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / name)
    (images / "d.png").write_bytes(b"broken")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"

    status = main([str(images), "--weights", str(run), "--output", str(out)])
    assert status == 1
    errors = capsys.readouterr().err
    assert "warning: skipped" in errors and "d.png: not a readable image" in errors
    segmenter = Segmenter(model, cfg)
    for name, (h, w) in sizes.items():
        stem = os.path.splitext(name)[0]
        mask_png = Image.open(out / f"{stem}_mask.png")
        assert mask_png.mode == "P" and mask_png.size == (w, h)
        assert np.asarray(mask_png.getpalette()[:3 * NUM_CLASSES]).reshape(-1, 3).tolist() == PALETTE
        _, probabilities = segmenter.predict(images / name)
        np.testing.assert_array_equal(np.asarray(mask_png), probabilities.argmax(-1))
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == (w, h)
    assert sorted(os.listdir(out)) == sorted(f"{s}_{kind}.png" for s in "abc" for kind in ("mask", "overlay"))
