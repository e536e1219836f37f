"""A user's own folder of images and masks: splits, exact masks, mixed image formats."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from exfuse_keras.config import config_from_dict
from exfuse_keras.data.checks import DataError
from exfuse_keras.data.folder import folder_examples
from exfuse_keras.data.pipeline import prepare_builder
from tests.data_fakes import fake_mask, label_colours, make_fake_folder

IDS = [f"img{k:02d}" for k in range(10)]
NUM_CLASSES = 5


def _config(root, **folder):
    return config_from_dict({"data": {
        "dataset": "folder", "root": str(root), "num_classes": NUM_CLASSES,
        "class_names": ["bg", "a", "b", "c", "d"], "crop_size": 64, "folder": folder}})


def _records(builder, split):
    return {ex["file_name"].decode(): (ex["image"], ex["mask"][..., 0])
            for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def test_ratio_split_is_seeded_and_complete(tmp_path):
    make_fake_folder(tmp_path, IDS, NUM_CLASSES)
    a = folder_examples(tmp_path, val_fraction=0.3, split_seed=0)
    b = folder_examples(tmp_path, val_fraction=0.3, split_seed=0)
    c = folder_examples(tmp_path, val_fraction=0.3, split_seed=1)
    ids = {split: [e.example_id for e in examples] for split, examples in a.items()}
    assert len(ids["val"]) == 3 and len(ids["train"]) == 7
    assert sorted(ids["train"] + ids["val"]) == IDS
    assert a == b
    assert [e.example_id for e in c["val"]] != ids["val"]


def test_split_lists(tmp_path):
    make_fake_folder(tmp_path, IDS, NUM_CLASSES)
    (tmp_path / "train.txt").write_text("\n".join(IDS[:6]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(IDS[6:]) + "\n")
    splits = folder_examples(tmp_path, train_list="train.txt", val_list="val.txt")
    assert [e.example_id for e in splits["train"]] == IDS[:6]
    assert [e.example_id for e in splits["val"]] == IDS[6:]
    (tmp_path / "val.txt").write_text("\n".join(IDS[5:]) + "\n")
    with pytest.raises(DataError, match=r"val.txt: ids also in train.txt: img05"):
        folder_examples(tmp_path, train_list="train.txt", val_list="val.txt")


@pytest.mark.parametrize("palette_masks", [True, False], ids=["palette", "grayscale"])
def test_builder_exact_masks(tmp_path, palette_masks):
    make_fake_folder(tmp_path, IDS, NUM_CLASSES, palette_masks=palette_masks)
    (tmp_path / "train.txt").write_text("\n".join(IDS[:7]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(IDS[7:]) + "\n")
    builder = prepare_builder(_config(tmp_path, train_list="train.txt", val_list="val.txt").data)
    assert builder.info.splits["train"].num_examples == 7
    assert builder.info.splits["val"].num_examples == 3
    for split, ids in (("train", IDS[:7]), ("val", IDS[7:])):
        records = _records(builder, split)
        assert sorted(records) == ids
        for example_id, (_, mask) in records.items():
            np.testing.assert_array_equal(mask, fake_mask(example_id, NUM_CLASSES))
            assert (mask == 255).any()


def test_builder_converts_image_modes(tmp_path):
    """Grayscale, CMYK, RGBA and 16-bit images reach the records as RGB of the right size."""
    make_fake_folder(tmp_path, IDS[:5], NUM_CLASSES)
    rgb = label_colours(NUM_CLASSES)[fake_mask("img00", NUM_CLASSES)]
    images = tmp_path / "images"
    Image.fromarray(rgb).convert("L").save(images / "img01.jpg", quality=100)
    Image.fromarray(rgb).convert("CMYK").save(images / "img02.jpg", quality=100)
    (images / "img03.jpg").unlink()
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])).save(images / "img03.png")
    (images / "img04.jpg").unlink()
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(images / "img04.png")
    builder = prepare_builder(_config(tmp_path, val_fraction=0.2).data)
    records = {**_records(builder, "train"), **_records(builder, "val")}
    assert sorted(records) == IDS[:5]
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    for example_id, (image, mask) in records.items():
        assert image.shape == rgb.shape and image.dtype == np.uint8
        np.testing.assert_array_equal(mask, fake_mask(example_id, NUM_CLASSES))
    assert np.abs(records["img01"][0].astype(int) - gray[..., None]).max() <= 3
    np.testing.assert_array_equal(records["img03"][0], rgb)  # alpha dropped, colours exact
    np.testing.assert_array_equal(records["img04"][0], np.repeat(rgb[..., :1], 3, axis=-1))
    assert np.abs(records["img02"][0].astype(int) - rgb).mean() < 4


def test_a_test_list_adds_a_test_split_disjoint_from_the_others(tmp_path):
    from exfuse_keras.config import ConfigError

    make_fake_folder(tmp_path, IDS, NUM_CLASSES)
    (tmp_path / "train.txt").write_text("\n".join(IDS[:6]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(IDS[6:8]) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(IDS[8:]) + "\n")
    splits = folder_examples(tmp_path, train_list="train.txt", val_list="val.txt", test_list="test.txt")
    assert {split: [e.example_id for e in examples] for split, examples in splits.items()} == \
        {"train": IDS[:6], "val": IDS[6:8], "test": IDS[8:]}
    (tmp_path / "test.txt").write_text(f"{IDS[7]}\n{IDS[9]}\n")
    with pytest.raises(DataError, match=r"test.txt: ids also in val.txt: img07"):
        folder_examples(tmp_path, train_list="train.txt", val_list="val.txt", test_list="test.txt")
    with pytest.raises(ConfigError, match=r"data.folder.test_list needs data.folder.train_list and val_list"):
        _config(tmp_path, test_list="test.txt")


def test_preparing_the_records_names_a_class_no_train_mask_holds(tmp_path, capsys):
    make_fake_folder(tmp_path, IDS, NUM_CLASSES)
    cfg = config_from_dict({"data": {"dataset": "folder", "root": str(tmp_path), "num_classes": NUM_CLASSES + 1,
                                     "class_names": ["bg", "a", "b", "c", "d", "never"], "crop_size": 64}})
    prepare_builder(cfg.data)
    assert f"no train mask holds class(es) {NUM_CLASSES} (never)" in capsys.readouterr().err
