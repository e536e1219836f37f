"""Band-by-band sliding windows (exfuse_keras/inference/sliding_bands.py) on toy models.

The reference is ``sliding.predict_sliding``, the whole-image TF implementation (its own tests
in test_inference.py check it against whole-image inference). Both add the same float32 terms in
the same order and divide by the same integer weights, so probabilities agree to ``SAME``
(1e-6; equal bits expected, the tolerance only absorbs a different summation inside TF ops) and
masks are equal.
"""

import tracemalloc

import keras
import numpy as np
import pytest
from PIL import Image

from exfuse_keras.config import config_from_dict, save_config
from exfuse_keras.inference import Segmenter
from exfuse_keras.inference.sliding import predict_sliding
from exfuse_keras.inference.sliding_bands import predict_sliding_bands, window_count
from exfuse_keras.inference.tta import logits_function
from tests.helpers import tiny_config_dict

SAME = 1e-6
NUM_CLASSES = 5
FILL = (120.0, 110.0, 100.0)


def _conv_model(seed=0):
    """Two 'same' 3x3 convolutions (ReLU between) to NUM_CLASSES logits, random weights."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
    output = keras.layers.Conv2D(NUM_CLASSES, 3, padding="same")
    model = keras.Model(inputs, output(hidden(inputs)))
    for layer in (hidden, output):
        layer.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.05 for w in layer.get_weights()])
    return model


@pytest.fixture(scope="module")
def logits_fn():
    return logits_function(_conv_model(seed=1))


@pytest.mark.parametrize("size, crop, stride, margin, scales, flip", [
    ((37, 53), 32, 16, None, (1.0,), False),      # odd sizes, half overlap, centre stitching
    ((70, 100), 32, 24, 0, (1.0,), False),        # plain averaging of whole windows
    ((33, 97), 32, 32, None, (1.0,), False),      # no overlap; last window shifted back
    ((20, 25), 32, 16, None, (1.0,), False),      # smaller than the crop: padded with the fill
    ((90, 21), 32, 20, 3, (0.75, 1.25), True),    # taller than wide, narrower than the crop, TTA
])
def test_bands_equal_the_whole_image_sliding_window(logits_fn, size, crop, stride, margin, scales, flip):
    image = np.random.default_rng(2).integers(0, 256, (*size, 3), dtype=np.uint8)
    reference = predict_sliding(logits_fn, image[None].astype(np.float32), crop, stride, scales, flip, FILL,
                                margin=margin).numpy()[0]
    probabilities = np.full((*size, NUM_CLASSES), np.nan, np.float32)
    mask = predict_sliding_bands(logits_fn, image, crop, stride, scales, flip, FILL, margin=margin,
                                 probabilities=probabilities, progress=False)
    assert mask.shape == size and mask.dtype == np.uint8
    np.testing.assert_allclose(probabilities, reference, rtol=0, atol=SAME)
    np.testing.assert_array_equal(mask, reference.argmax(-1))


def test_progress_counts_windows_and_quiet_prints_nothing(logits_fn, capsys):
    image = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    total = window_count(50, 70, 32, 16)
    assert total == 3 * 4
    predict_sliding_bands(logits_fn, image, 32, 16, progress=True)
    err = capsys.readouterr().err
    assert f"{total}/{total}" in err and "windows" in err and "<" in err  # tqdm: elapsed<remaining
    predict_sliding_bands(logits_fn, image, 32, 16, progress=False)
    assert capsys.readouterr().err == ""


def test_memory_grows_with_the_band_not_the_image(logits_fn):
    # Numpy allocations only: tracemalloc sees numpy's buffers, not TensorFlow's. Here a float32
    # [H, W, C] accumulator would take 5.2 MB at 1024 rows, the band [crop, W, C] 328 KB.
    width, crop, stride = 256, 64, 48
    image = np.random.default_rng(4).integers(0, 256, (1024, width, 3), dtype=np.uint8)
    predict_sliding_bands(logits_fn, image[:crop], crop, stride, progress=False)  # TF's first-call caches
    peaks = {}
    tracemalloc.start()
    try:
        for height in (512, 1024):
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            predict_sliding_bands(logits_fn, image[:height], crop, stride, progress=False)
            peaks[height] = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    band, mask_growth = crop * width * NUM_CLASSES * 4, 512 * width
    assert peaks[1024] < 1024 * width * NUM_CLASSES * 4 / 2
    # Twice the rows: the peak grows by the larger uint8 mask, not by float32 probabilities (2.6 MB).
    assert peaks[1024] - peaks[512] < mask_growth + band


def _segmenter():
    config = tiny_config_dict()
    config["data"]["mean_rgb"] = list(FILL)
    return Segmenter(_conv_model(seed=5), config_from_dict(config))


def test_segmenter_returns_refuses_or_writes_probabilities(tmp_path):
    segmenter = _segmenter()
    image = np.random.default_rng(6).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    reference = predict_sliding(logits_function(segmenter.model), image[None].astype(np.float32), 32, 16,
                                fill=FILL).numpy()[0]
    mask, probabilities = segmenter.predict(image, sliding_window=(32, 16))
    np.testing.assert_allclose(probabilities, reference, rtol=0, atol=SAME)
    np.testing.assert_array_equal(mask, reference.argmax(-1))
    mask_only, nothing = segmenter.predict(image, sliding_window=(32, 16), probabilities=False)
    assert nothing is None
    np.testing.assert_array_equal(mask_only, mask)
    on_disk = np.lib.format.open_memmap(tmp_path / "p.npy", "w+", np.float32, (45, 61, NUM_CLASSES))
    _, written = segmenter.predict(image, sliding_window=(32, 16), probabilities=on_disk)
    assert written is on_disk
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), reference, rtol=0, atol=SAME)
    _, plain = segmenter.predict(image, probabilities=np.zeros((45, 61, NUM_CLASSES), np.float32))
    np.testing.assert_array_equal(plain, segmenter.predict(image)[1])

    segmenter.max_probability_bytes = 45 * 61 * NUM_CLASSES * 4 - 1
    with pytest.raises(ValueError, match=r"images\[0\]: the probabilities of a 45x61 image with 5 classes take "
                                         r"0\.05 MB as float32, over .* probabilities=False") as error:
        segmenter.predict(image, sliding_window=(32, 16))
    assert "\n" not in str(error.value)
    assert segmenter.predict(image, sliding_window=(32, 16), probabilities=False)[1] is None
    with pytest.raises(ValueError, match=r"expected a probabilities array \[45, 61, 5\], got shape \(45, 61\)"):
        segmenter.predict(image, probabilities=np.zeros((45, 61), np.float32))


def test_predict_cli_shows_window_progress_unless_quiet(tmp_path, capsys):
    from exfuse_keras.inference.predict import main

    segmenter = _segmenter()
    run = tmp_path / "run"
    run.mkdir()
    save_config(segmenter.cfg, str(run / "config.yaml"))
    segmenter.model.save(str(run / "best.keras"))
    image = np.random.default_rng(7).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "big.png")
    arguments = [str(tmp_path / "big.png"), "--weights", str(run), "--sliding-window", "32,16"]

    assert main(arguments + ["--output", str(tmp_path / "shown")]) == 0
    shown = capsys.readouterr().err
    assert "windows" in shown and "12/12" in shown
    assert main(arguments + ["--output", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    expected = segmenter.predict(image, sliding_window=(32, 16))[0]
    for folder in ("shown", "quiet"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / folder / "big_mask.png")), expected)


def test_large_image_benchmark_runs_and_reports(capsys):
    from exfuse_keras.bench.large_image import main

    assert main(["--size", "200", "--sliding-window", "128,96", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "200x200 image, 6 classes, window 128,96: 4 windows through api" in out
    assert "peak" in out and "CPU: " in out and "| 200² | 6 | 128,96 | 4 | api |" in out
