"""The VOC 2012 / SBD TFDS builder on a small fake VOCdevkit + SBD tree, and the shapes config."""

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from exfuse_keras.config import ConfigError, config_from_dict
from exfuse_keras.data.pipeline import prepare_builder
from exfuse_keras.data.shapes import VOC_SUBDIR, generate_shapes_dataset
from exfuse_keras.data.voc import SBD_URL, Voc2012Segmentation, voc_examples
from tests.data_fakes import (SBD_TRAIN, SBD_VAL, TRAIN_AUG, VOC_TRAIN, VOC_VAL, fake_mask, label_colours,
                              make_fake_sbd, make_fake_voc)


def _records(builder, split):
    """{file_name: (image uint8 [H, W, 3], mask uint8 [H, W])}; TFDS shuffles the order on write."""
    return {ex["file_name"].decode(): (ex["image"], ex["mask"][..., 0])
            for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def _expected_mask(example_id):
    # VOC's PNGs carry a 255 border ring; SBD's .mat masks have none.
    return fake_mask(example_id, border=example_id in VOC_TRAIN + VOC_VAL)


def _prepare(config, data_dir, manual_dir):
    builder = Voc2012Segmentation(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocsbd")
    make_fake_voc(root)
    make_fake_sbd(root)
    return root


def test_train_aug_listing_excludes_voc_val(fake_root):
    splits = voc_examples(fake_root / VOC_SUBDIR, fake_root / "benchmark_RELEASE" / "dataset", "train_aug")
    assert [e.example_id for e in splits["train"]] == TRAIN_AUG
    assert [e.example_id for e in splits["val"]] == VOC_VAL
    by_id = {e.example_id: e for e in splits["train"]}
    assert by_id["b"].mask_path.endswith("SegmentationClass/b.png")  # VOC's mask beats SBD's
    assert by_id["f"].mask_path.endswith("cls/f.mat")
    assert by_id["f"].image_path.endswith("JPEGImages/f.jpg")
    assert by_id["h"].image_path.endswith("img/h.jpg")  # not in VOC's JPEGImages
    assert set(VOC_VAL) & set(SBD_TRAIN + SBD_VAL), "the fake tree must test the exclusion"


def test_voc_config_sizes_and_exact_masks(fake_root, tmp_path):
    builder = _prepare("voc", tmp_path, fake_root)
    assert builder.info.splits["train"].num_examples == len(VOC_TRAIN)
    assert builder.info.splits["val"].num_examples == len(VOC_VAL)
    for split, ids in (("train", VOC_TRAIN), ("val", VOC_VAL)):
        records = _records(builder, split)
        assert sorted(records) == ids
        for example_id, (image, mask) in records.items():
            expected = _expected_mask(example_id)
            assert mask.dtype == np.uint8 and image.shape == expected.shape + (3,)
            np.testing.assert_array_equal(mask, expected)
            assert (mask == 255).any()
            # The JPEG (quality 100) still shows each label's colour.
            colours = label_colours()[expected].astype(int)
            assert np.abs(image.astype(int) - colours).mean() < 3


def test_train_aug_config(fake_root, tmp_path):
    builder = _prepare("train_aug", tmp_path, fake_root)
    train, val = _records(builder, "train"), _records(builder, "val")
    assert sorted(train) == TRAIN_AUG and sorted(val) == VOC_VAL
    assert not set(train) & set(VOC_VAL)
    for example_id, (_, mask) in {**train, **val}.items():
        np.testing.assert_array_equal(mask, _expected_mask(example_id))


def test_archives_and_download(fake_root, tmp_path, monkeypatch):
    """VOC from its archive in manual_dir; SBD through the download manager (served locally)."""
    manual = tmp_path / "manual"
    manual.mkdir()
    with tarfile.open(manual / "VOCtrainval_11-May-2012.tar", "w") as tar:
        tar.add(fake_root / "VOCdevkit", arcname="VOCdevkit")
    sbd_archive = tmp_path / "served" / "benchmark.tgz"
    sbd_archive.parent.mkdir()
    with tarfile.open(sbd_archive, "w:gz") as tar:
        tar.add(fake_root / "benchmark_RELEASE", arcname="benchmark_RELEASE")
    requested = []

    def fake_download_and_extract(self, url):
        requested.append(url)
        return self.extract(str(sbd_archive))

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", fake_download_and_extract)
    builder = _prepare("train_aug", tmp_path / "tfds", manual)
    assert requested == [SBD_URL]  # VOC came from its archive, not the network
    train = _records(builder, "train")
    assert sorted(train) == TRAIN_AUG
    np.testing.assert_array_equal(train["h"][1], _expected_mask("h"))


def test_shapes_config_and_rebuild_on_change(tmp_path):
    root = tmp_path / "shapes"
    generate_shapes_dataset(root, num_train=6, num_val=3, size=64, seed=0, verbose=False)
    cfg = config_from_dict({"data": {"dataset": "shapes", "root": str(root), "num_classes": 6,
                                     "class_names": list("abcdef"), "crop_size": 64}})

    def check(builder):
        for split, count in (("train", 6), ("val", 3)):
            records = _records(builder, split)
            assert len(records) == count
            for example_id, (_, mask) in records.items():
                png = root / VOC_SUBDIR / "SegmentationClass" / f"{example_id}.png"
                with Image.open(png) as stored:
                    np.testing.assert_array_equal(mask, np.asarray(stored))

    check(prepare_builder(cfg.data))
    # Regenerated with another seed: the records must follow, not be reused.
    generate_shapes_dataset(root, num_train=6, num_val=3, size=64, seed=1, verbose=False)
    check(prepare_builder(cfg.data))


def test_a_root_given_relative_then_absolute_reuses_the_records(tmp_path, monkeypatch):
    generate_shapes_dataset(tmp_path / "shapes", num_train=4, num_val=2, size=64, seed=0, verbose=False)
    monkeypatch.chdir(tmp_path)

    def prepared(root):
        cfg = config_from_dict({"data": {"dataset": "shapes", "root": root, "num_classes": 6,
                                         "class_names": list("abcdef"), "crop_size": 64}})
        builder = prepare_builder(cfg.data)
        return {p.name: p.stat().st_mtime_ns for p in Path(builder.data_dir).glob("*.tfrecord*")}

    first = prepared("shapes")
    assert first and prepared(str(tmp_path / "shapes")) == first  # not rebuilt
    os.symlink(tmp_path / "shapes", tmp_path / "linked")
    assert prepared("linked") == first


def test_class_count_mismatch_is_a_config_error(fake_root, tmp_path):
    cfg = config_from_dict({"data": {"dataset": "voc", "root": str(fake_root), "tfds_dir": str(tmp_path),
                                     "num_classes": 5, "class_names": list("abcde")}})
    with pytest.raises(ConfigError, match="data.num_classes is 5 but dataset 'voc' has 21 classes"):
        prepare_builder(cfg.data)


def test_shapes_missing_without_generator_data(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "placeholder").write_text("x")
    builder = Voc2012Segmentation(config="shapes", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="VOCdevkit/VOC2012: folder not found; generate it"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(empty)))
