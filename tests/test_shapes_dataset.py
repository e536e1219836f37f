"""Tests for the VOC palette helpers and the procedural shapes dataset (no TensorFlow)."""

import numpy as np
import pytest
from PIL import Image

from exfuse_keras.data.palette import colorize, voc_palette, write_palette_png
from exfuse_keras.data.shapes import (
    SHAPES_CLASSES,
    VOC_SUBDIR,
    colour_histogram_baseline,
    generate_shapes_dataset,
    render_example,
)


def _voc(root):
    return root / VOC_SUBDIR


def _ids(root, split):
    return (_voc(root) / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _mask(root, image_id):
    return np.asarray(Image.open(_voc(root) / "SegmentationClass" / f"{image_id}.png"))


def _image(root, image_id):
    return np.asarray(Image.open(_voc(root) / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_small")
    meta = generate_shapes_dataset(root, num_train=24, num_val=8, size=64, seed=0, verbose=False)
    return root, meta


def test_voc_palette_known_entries():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 15: (192, 128, 128), 255: (224, 224, 192)}
    for index, colour in expected.items():
        assert tuple(pal[index]) == colour
    np.testing.assert_array_equal(voc_palette(21), pal[:21])


def test_palette_png_round_trip(tmp_path):
    mask = np.arange(64 * 48, dtype=np.int64).reshape(48, 64) % 7
    mask = mask.astype(np.uint8)
    mask[:5, :5] = 255
    path = tmp_path / "mask.png"
    write_palette_png(path, mask, voc_palette(7))
    with Image.open(path) as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.asarray(img), mask)
        stored = np.array(img.getpalette()[: 256 * 3], dtype=np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(stored, voc_palette())


def test_colorize_void_colour():
    mask = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    rgb = colorize(mask, voc_palette(3))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == (128, 0, 0)
    assert tuple(rgb[1, 1]) == (224, 224, 192)
    custom = np.zeros((256, 3), dtype=np.uint8)
    custom[255] = (1, 2, 3)
    assert tuple(colorize(mask, custom)[1, 1]) == (1, 2, 3)


def test_render_example_shapes_and_labels():
    image, mask = render_example(np.random.default_rng(3), 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert mask.shape == (48, 48) and mask.dtype == np.uint8
    assert mask.max() < len(SHAPES_CLASSES)
    assert (mask > 0).any()


def test_layout(small_dataset):
    root, meta = small_dataset
    train, val = _ids(root, "train"), _ids(root, "val")
    assert len(train) == 24 and len(val) == 8
    assert not set(train) & set(val)
    for image_id in train + val:
        mask = _mask(root, image_id)
        image = _image(root, image_id)
        assert mask.max() < len(SHAPES_CLASSES)
        assert image.shape[:2] == mask.shape == (64, 64)
    assert (root / "shapes_meta.json").exists()
    assert meta["classes"] == list(SHAPES_CLASSES)
    for split in ("train", "val"):
        assert np.isclose(sum(meta["class_balance"][split]), 1.0)


def test_determinism(tmp_path):
    a = generate_shapes_dataset(tmp_path / "a", num_train=10, num_val=2, size=48, seed=1, verbose=False)
    b = generate_shapes_dataset(tmp_path / "b", num_train=10, num_val=2, size=48, seed=1, verbose=False)
    generate_shapes_dataset(tmp_path / "c", num_train=10, num_val=2, size=48, seed=2, verbose=False)
    generate_shapes_dataset(tmp_path / "d", num_train=20, num_val=2, size=48, seed=1, verbose=False)
    assert a == b
    seg = VOC_SUBDIR / "SegmentationClass"
    differs = False
    for image_id in _ids(tmp_path / "a", "train") + _ids(tmp_path / "a", "val"):
        png = f"{image_id}.png"
        assert (tmp_path / "a" / seg / png).read_bytes() == (tmp_path / "b" / seg / png).read_bytes()
        np.testing.assert_array_equal(_image(tmp_path / "a", image_id), _image(tmp_path / "b", image_id))
        # Image k must not depend on how many images the split holds.
        np.testing.assert_array_equal(_mask(tmp_path / "a", image_id), _mask(tmp_path / "d", image_id))
        np.testing.assert_array_equal(_image(tmp_path / "a", image_id), _image(tmp_path / "d", image_id))
        differs |= not np.array_equal(_image(tmp_path / "a", image_id), _image(tmp_path / "c", image_id))
    assert differs


def test_colour_does_not_decide_class(tmp_path):
    meta = generate_shapes_dataset(tmp_path, num_train=120, num_val=30, size=64, seed=0, verbose=False)
    for split in ("train", "val"):
        assert all(f > 0 for f in meta["class_balance"][split][1:]), meta["class_balance"][split]
    miou = colour_histogram_baseline(tmp_path)
    assert 0.0 <= miou < 0.4


def test_meta_cache(tmp_path):
    first = generate_shapes_dataset(tmp_path, num_train=4, num_val=2, size=32, seed=0, verbose=False)
    files = sorted((tmp_path / VOC_SUBDIR).rglob("*.*")) + [tmp_path / "shapes_meta.json"]
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    second = generate_shapes_dataset(tmp_path, num_train=4, num_val=2, size=32, seed=0, verbose=False)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    # Different arguments must regenerate rather than reuse the cache.
    third = generate_shapes_dataset(tmp_path, num_train=5, num_val=2, size=32, seed=0, verbose=False)
    assert third["args"]["num_train"] == 5 and len(_ids(tmp_path, "train")) == 5
