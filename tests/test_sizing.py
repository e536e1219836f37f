"""``data.crop_size: auto`` and ``train.steps_per_epoch: auto`` (exfuse_keras/data/sizing.py),
checked against the rule written out independently here and against files the tests write."""

import math

import numpy as np
import pytest
from PIL import Image

from exfuse_keras.config import ConfigError, config_from_dict, load_config
from exfuse_keras.data.sizing import auto_crop_size, resolve_auto_sizes
from tests.helpers import tiny_config_dict


def _reference_crop(sides):
    """The documented rule: median shorter side, down to a multiple of 32, within [64, 512]."""
    return int(np.clip(np.floor(np.median(sides) / 32) * 32, 64, 512))


@pytest.mark.parametrize("sides", [[300, 500, 700], [40, 50, 60], [2000, 3000], [95, 97, 100, 420], [128]])
def test_auto_crop_follows_the_documented_rule(sides):
    assert auto_crop_size(sides) == _reference_crop(sides)
    assert auto_crop_size(sides) % 32 == 0


def test_auto_crop_of_no_images_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        auto_crop_size([])


def _folder(tmp_path, sizes):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k, (height, width) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / "images" / f"im{k}.png")
        Image.fromarray((rng.integers(0, 2, (height, width))).astype(np.uint8), mode="L").save(
            root / "masks" / f"im{k}.png")
    ids = [f"im{k}" for k in range(len(sizes))]
    (root / "train.txt").write_text("\n".join(ids[:-2]))
    (root / "val.txt").write_text("\n".join(ids[-2:]))
    return root, ids


def _config(root, **train):
    values = tiny_config_dict()
    values["data"] = {"dataset": "folder", "root": str(root), "num_classes": 2, "class_names": ["bg", "fg"],
                      "crop_size": "auto", "folder": {"train_list": "train.txt", "val_list": "val.txt"}}
    values["train"] = {"batch_size": 2, "epochs": 3, "steps_per_epoch": "auto", **train}
    return config_from_dict(values)


def test_both_sizes_measured_from_a_folder_dataset(tmp_path):
    # Train images (all but the last two): shorter sides 130, 200, 260, 330, 90; val ones ignored.
    sizes = [(130, 300), (400, 200), (260, 260), (330, 500), (90, 140), (1000, 1000), (1000, 1000)]
    root, _ = _folder(tmp_path, sizes)
    cfg, notes = resolve_auto_sizes(_config(root), progress=False)
    assert cfg.data.crop_size == _reference_crop([130, 200, 260, 330, 90]) == 192
    assert cfg.train.steps_per_epoch == math.ceil(5 / 2) == 3
    assert any("data.crop_size: auto -> 192" in n for n in notes)
    assert any("train.steps_per_epoch: auto -> 3" in n and "9 steps" in n for n in notes)
    again, more = resolve_auto_sizes(cfg, progress=False)  # nothing left to size
    assert again is cfg and more == []


def test_a_training_pipeline_needs_the_crop_measured_first(tmp_path):
    from exfuse_keras.data.browse import browse_rows
    from exfuse_keras.data.pipeline import make_dataset

    root, _ = _folder(tmp_path, [(96, 128)] * 5)
    cfg = _config(root)
    with pytest.raises(ConfigError, match="data.crop_size is auto: .*resolve_auto_sizes"):
        next(iter(make_dataset(cfg, "train", training=True)))
    sized, _ = resolve_auto_sizes(cfg, progress=False)
    images, _ = next(iter(make_dataset(sized, "train", training=True)))
    assert tuple(images.shape[1:3]) == (sized.data.crop_size,) * 2 == (96, 96)
    assert browse_rows(cfg, "train", 1, augmented=True)[0][0].shape == (96, 96, 3)  # browse measures it itself


def test_the_task_compiles_with_the_measured_schedule(tmp_path):
    from exfuse_keras.task import ExFuseImageSegmenter

    root, _ = _folder(tmp_path, [(96, 128)] * 9)
    task = ExFuseImageSegmenter(_config(root, batch_size=3))
    task.compile()
    assert task.cfg.train.steps_per_epoch == math.ceil(7 / 3)


def _shapes(tmp_path):
    values = tiny_config_dict()
    values["data"].update(dataset="shapes", root=str(tmp_path / "shapes"), num_classes=6,
                          class_names=["bg", "disc", "square", "triangle", "ring", "bar"],
                          synthetic={"size": 64, "num_train": 10, "num_val": 2})
    return values


def test_crop_auto_needs_a_folder_dataset(tmp_path):
    values = _shapes(tmp_path)
    values["data"]["crop_size"] = "auto"
    with pytest.raises(ConfigError, match=r"data.crop_size: auto .* dataset 'shapes' needs a number"):
        resolve_auto_sizes(config_from_dict(values), progress=False)


def test_steps_auto_on_built_in_data_is_one_pass(tmp_path):
    values = _shapes(tmp_path)
    values["train"] = {"batch_size": 4, "steps_per_epoch": "auto"}
    cfg, _ = resolve_auto_sizes(config_from_dict(values), progress=False)
    assert cfg.train.steps_per_epoch == math.ceil(10 / 4) == 3


@pytest.mark.parametrize("key, value, expected", [
    ("data.crop_size", "automatic", "data.crop_size must be an integer or one of 'auto'"),
    ("train.steps_per_epoch", "full", "train.steps_per_epoch must be an integer or one of 'auto'"),
    ("train.steps_per_epoch", 0, "train.steps_per_epoch must be positive"),
    ("data.crop_size", 100, "data.crop_size must be a positive multiple of 32"),
])
def test_bad_sizes_are_refused_naming_the_key(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [f"{key}={value}"])
