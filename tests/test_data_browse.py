"""``python -m exfuse_keras.data.browse``: the picture's rows, the legend's counts, errors."""

import numpy as np
import pytest
import yaml
from PIL import Image

from exfuse_keras import load_config
from exfuse_keras.data import browse
from exfuse_keras.data.checks import read_mask
from exfuse_keras.data.folder import folder_examples
from tests.data_fakes import FAKE_SIZE, make_fake_folder
from tests.helpers import tiny_config_dict

IDS = [f"im{k}" for k in range(6)]


def test_overlay_blends_labelled_pixels_half_and_half_and_leaves_ignored_ones():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    colours = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    mask = rng.integers(0, 3, (5, 7)).astype(np.uint8)
    mask[0, :4] = 255
    got = browse.overlay(image, mask, colours, 255)
    expected = image.astype(np.float64) / 2 + colours / 2
    labelled = mask != 255
    assert np.abs(got[labelled] - expected[labelled]).max() <= 0.5
    np.testing.assert_array_equal(got[~labelled], image[~labelled])


@pytest.fixture(scope="module")
def folder_config(tmp_path_factory):
    base = tmp_path_factory.mktemp("browse")
    root = make_fake_folder(base / "data", IDS, num_classes=5)
    values = tiny_config_dict()
    values["data"].update({"dataset": "folder", "root": str(root), "folder": {"val_fraction": 0.34},
                           "scale_range": [1.0, 1.0]})
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path, root


def test_browse_draws_every_row_and_counts_the_split_like_the_masks_on_disk(folder_config, tmp_path, capsys):
    config, root = folder_config
    output = tmp_path / "browse.png"
    assert browse.main(["--config", str(config), "--count", "3", "--output", str(output), "--no-progress"]) == 0
    out = capsys.readouterr().out
    # The reference: the train masks read from disk, counted with numpy.
    train = folder_examples(root, val_fraction=0.34)["train"]
    pixels = sum(np.bincount(read_mask(e.mask_path, 5).ravel(), minlength=256) for e in train)
    images = sum(np.bincount(read_mask(e.mask_path, 5).ravel(), minlength=256) > 0 for e in train)
    for k, name in enumerate(["bg", "a", "b", "c", "d"]):
        line = next(line for line in out.splitlines() if line.split()[:2] == [str(k), name])
        assert line.split()[2] == f"{pixels[k]:,}" and line.split()[-1] == f"{images[k]:,}", line
    assert f"{len(train)} images" in out and "wrote" in out
    picture = np.asarray(Image.open(output))
    height, width = FAKE_SIZE
    assert picture.shape[1] >= 3 * width and picture.shape[0] >= 3 * height + 6 * 14  # 3 rows, 6 legend lines
    # The first row's overlay cell holds the blend of its image and mask (gallery layout: 4 px gaps, 16 px title).
    (image, _, blended), = browse.browse_rows(load_config(str(config)), "train", 1)
    cell = picture[20:20 + height, 4 + 2 * (width + 4):4 + 2 * (width + 4) + width]
    np.testing.assert_array_equal(cell, blended)
    np.testing.assert_array_equal(picture[20:20 + height, 4:4 + width], image)


def test_augmented_rows_are_training_crops(folder_config):
    config, _ = folder_config
    cfg = load_config(str(config))
    rows = browse.browse_rows(cfg, "train", 2, augmented=True)
    assert len(rows) == 2 and all(cell.shape == (64, 64, 3) for row in rows for cell in row)


def test_browse_works_on_a_built_in_dataset(tmp_path, capsys):
    from exfuse_keras.data.shapes import generate_shapes_dataset

    generate_shapes_dataset(str(tmp_path / "shapes"), num_train=6, num_val=3, verbose=False)
    output = tmp_path / "shapes.png"
    assert browse.main(["--config", "configs/quickstart.yaml", "--set", f"data.root={tmp_path / 'shapes'}",
                        "--split", "val", "--count", "2", "--output", str(output), "--no-progress"]) == 0
    assert "3 images" in capsys.readouterr().out and output.is_file()


@pytest.mark.parametrize("arguments,message", [
    (["--split", "tests"], "--split 'tests': expected train, val or test"),
    (["--split", "test"], "the dataset has no 'test' split"),
    (["--count", "0"], "--count, --zoom and --max-images must be at least 1"),
    (["--output", "browse.jpg"], "--output browse.jpg: expected a .png file"),
])
def test_bad_arguments_are_refused_in_one_line(folder_config, arguments, message, capsys):
    config, _ = folder_config
    assert browse.main(["--config", str(config), *arguments]) == 2
    assert message in capsys.readouterr().err
