"""Validation of the data settings the input pipeline added to the config."""

import os

import pytest

from exfuse_keras.config import ConfigError, load_config


@pytest.mark.parametrize("override, key, expected", [
    ("data.dataset=coco", "data.dataset",
     "must be one of ['voc', 'train_aug', 'shapes', 'scenes', 'folder', 'coco_voc', 'mix']"),
    ("data.scale_range=[2.0, 0.5]", "data.scale_range", "0 < min <= max"),
    ("data.scale_range=[1.0]", "data.scale_range", "[min, max]"),
    ("data.mean_rgb=[1, 2]", "data.mean_rgb", "three values"),
    ("data.shuffle_buffer=0", "data.shuffle_buffer", "must be positive"),
    ("data.folder.val_fraction=1.0", "data.folder.val_fraction", "must be in (0, 1)"),
    ("data.folder.train_list=train.txt", "data.folder.train_list", "given together"),
    ("data.synthetic.look_alike_sizes=matched", "data.synthetic.look_alike_sizes",
     "is an option of the scenes benchmark only"),
])
def test_bad_data_settings(override, key, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert key in str(info.value) and expected in str(info.value)


def test_defaults():
    data = load_config(None).data
    assert data.scale_range == [0.5, 2.0] and data.flip and not data.photometric_jitter
    assert data.tfds_dir is None and data.folder.image_dir == "images"


def test_look_alike_sizes_names_its_choices():
    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "data")
    with pytest.raises(ConfigError, match="data.synthetic.look_alike_sizes must be independent or matched, got 'big'"):
        load_config(os.path.join(configs, "scenes_128.yaml"), ["data.synthetic.look_alike_sizes=big"])
    assert load_config(os.path.join(configs, "scenes_128_matched.yaml")).data.synthetic.look_alike_sizes == "matched"
