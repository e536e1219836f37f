"""COCO 2017 -> VOC classes: the category table, RLE and polygon decoding, crowds, dropping images
without a VOC object; the instances source through the TFDS builder and the pipeline, the panoptic
source on ``tfds.testing.mock_data``."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from exfuse_keras.config import VOC_CLASSES, config_from_dict
from exfuse_keras.data.checks import DataError
from exfuse_keras.data.coco import (COCO_TO_VOC, annotation_mask, panoptic_voc_examples, rle_counts_from_string,
                                    voc_label_table)
from exfuse_keras.data.pipeline import make_dataset, num_examples, prepare_builder

# The 20 COCO categories with their official ids, and two others.
COCO_IDS = {"person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "airplane": 5, "bus": 6, "train": 7,
            "truck": 8, "boat": 9, "bird": 16, "cat": 17, "dog": 18, "horse": 19, "sheep": 20, "cow": 21,
            "bottle": 44, "banana": 52, "chair": 62, "couch": 63, "potted plant": 64, "dining table": 67,
            "tv": 72}
PERSON, CAR, DOG = VOC_CLASSES.index("person"), VOC_CLASSES.index("car"), VOC_CLASSES.index("dog")
H, W = 24, 32


def test_category_table_maps_the_20_voc_classes():
    assert len(COCO_TO_VOC) == 20
    assert sorted(COCO_TO_VOC.values()) == sorted(VOC_CLASSES[1:])
    table = voc_label_table(list(COCO_IDS), "test")
    assert table["airplane"] == VOC_CLASSES.index("aeroplane") == 1
    assert table["dining table"] == VOC_CLASSES.index("diningtable")
    assert table["motorcycle"] == VOC_CLASSES.index("motorbike")
    assert table["potted plant"] == VOC_CLASSES.index("pottedplant")
    assert table["couch"] == VOC_CLASSES.index("sofa")
    assert table["tv"] == VOC_CLASSES.index("tvmonitor") == 20
    assert "banana" not in table and "truck" not in table
    with pytest.raises(DataError, match="category names lack airplane"):
        voc_label_table([n for n in COCO_IDS if n != "airplane"], "x.json")


def _rle_string(counts):
    """COCO's compressed RLE (pycocotools' rleToString), an independent encoder for the tests."""
    chars = []
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            char = value & 0x1F
            value >>= 5
            more = value != -1 if char & 0x10 else value != 0
            chars.append(chr((char | 0x20 if more else char) + 48))
    return "".join(chars)


def _counts(mask):
    """Column-major run lengths of a bool mask, starting with a run of 0s."""
    flat = mask.T.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], edges])).tolist()


def test_rle_decoding():
    # Worked by hand: "V" = 38 = 0b100110 (value 6, more follows), "1" adds 1 << 5: 38, plus the
    # count two places back (2) = 40. "L" = 28 ends with bit 0x10 set: 28 - 32 = -4, + 5 = 1.
    assert rle_counts_from_string("123V1") == [1, 2, 3, 40]
    assert rle_counts_from_string("555L") == [5, 5, 5, 1]
    # Uncompressed counts run down the columns: 2 zeros, 3 ones, 1 zero.
    np.testing.assert_array_equal(annotation_mask({"size": [2, 3], "counts": [2, 3, 1]}, 2, 3, "t"),
                                  [[False, True, True], [False, True, False]])
    rng = np.random.default_rng(0)
    mask = rng.random((H, W)) < 0.3
    counts = _counts(mask)
    assert _rle_string(counts) != ""
    np.testing.assert_array_equal(annotation_mask({"size": [H, W], "counts": _rle_string(counts)}, H, W, "t"), mask)
    np.testing.assert_array_equal(annotation_mask({"size": [H, W], "counts": counts}, H, W, "t"), mask)
    with pytest.raises(DataError, match="RLE counts cover"):
        annotation_mask({"size": [H, W], "counts": [3, 4]}, H, W, "ann 7")
    with pytest.raises(DataError, match="RLE size"):
        annotation_mask({"size": [W, H], "counts": counts}, H, W, "ann 7")


def test_polygon_fills_its_pixels():
    got = annotation_mask([[2, 1, 6, 1, 6, 4, 2, 4], [0, 0, 1, 0]], 6, 8, "t")  # 2nd: degenerate
    expected = np.zeros((6, 8), bool)
    expected[1:5, 2:7] = True
    np.testing.assert_array_equal(got, expected)


def _box(y0, y1, x0, x1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _polygon(y0, y1, x0, x1):
    """A rectangle polygon that fills rows y0..y1-1 and columns x0..x1-1 (edges included)."""
    return [[x0, y0, x1 - 1, y0, x1 - 1, y1 - 1, x0, y1 - 1]]


def _write_jpeg(path, mode="RGB"):
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).convert(mode).save(path, quality=95)


def _make_coco(root):
    """A tiny COCO 2017 tree; returns {file stem: expected VOC mask} of every image (before dropping)."""
    for folder in ("annotations", "train2017", "val2017"):
        (root / folder).mkdir(parents=True)
    person_crowd = _box(0, 10, 0, 16)
    car = _box(14, 20, 20, 30)
    expected = {}
    # 1: a person over a crowd of people (the person keeps its class), a car as uncompressed RLE,
    # a banana (background), a crowd of bananas (background, not ignored).
    one = np.zeros((H, W), np.uint8)
    one[person_crowd] = 255
    one[2:8, 4:10] = PERSON
    one[car] = CAR
    expected["000000000001"] = one
    expected["000000000002"] = np.zeros((H, W), np.uint8)  # a banana only
    three = np.zeros((H, W), np.uint8)  # a crowd of people only: no VOC object to learn from
    three[person_crowd] = 255
    expected["000000000003"] = three
    four = np.zeros((H, W), np.uint8)  # a dog as compressed RLE; a grayscale JPEG
    four[_box(5, 20, 3, 12)] = DOG
    expected["000000000004"] = four
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 160.0,
         "segmentation": {"size": [H, W], "counts": _counts(person_crowd)}},
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 36.0, "segmentation": _polygon(2, 8, 4, 10)},
        {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 60.0,
         "segmentation": {"size": [H, W], "counts": _counts(car)}},
        {"id": 13, "image_id": 1, "category_id": 52, "iscrowd": 0, "area": 9.0, "segmentation": _polygon(20, 23, 0, 3)},
        {"id": 14, "image_id": 1, "category_id": 52, "iscrowd": 1, "area": 4.0,
         "segmentation": {"size": [H, W], "counts": _counts(_box(21, 23, 10, 12))}},
        {"id": 20, "image_id": 2, "category_id": 52, "iscrowd": 0, "area": 9.0, "segmentation": _polygon(1, 4, 1, 4)},
        {"id": 30, "image_id": 3, "category_id": 1, "iscrowd": 1, "area": 160.0,
         "segmentation": {"size": [H, W], "counts": _counts(person_crowd)}},
        {"id": 40, "image_id": 4, "category_id": 18, "iscrowd": 0, "area": 135.0,
         "segmentation": {"size": [H, W], "counts": _rle_string(_counts(_box(5, 20, 3, 12)))}},
    ]
    categories = [{"id": cid, "name": name, "supercategory": "x"} for name, cid in COCO_IDS.items()]
    splits = {"train2017": [1, 2, 3], "val2017": [4]}
    for split, ids in splits.items():
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": H, "width": W} for i in ids]
        for image in images:
            _write_jpeg(root / split / image["file_name"], "L" if image["id"] == 4 else "RGB")
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "categories": categories,
             "annotations": [a for a in annotations if a["image_id"] in ids]}))
    return expected


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return root, _make_coco(root)


def _cfg(root, drop_empty=True, **data):
    return config_from_dict({"data": {"dataset": "coco_voc", "root": str(root), "crop_size": 32,
                                      "shuffle_buffer": 4, "coco": {"source": "instances", "drop_empty": drop_empty},
                                      **data},
                             "train": {"batch_size": 1}})


def _records(builder, split):
    return {ex["file_name"].decode(): (ex["image"], ex["mask"][..., 0])
            for ex in tfds.as_numpy(builder.as_dataset(split=split))}


@pytest.mark.parametrize("drop_empty, train_ids", [(True, ["000000000001"]),
                                                   (False, ["000000000001", "000000000002", "000000000003"])])
def test_instances_builder_masks(coco_root, drop_empty, train_ids):
    root, expected = coco_root
    builder = prepare_builder(_cfg(root, drop_empty).data)
    assert builder.builder_config.name == ("instances" if drop_empty else "instances_all")
    train, val = _records(builder, "train"), _records(builder, "val")
    assert sorted(train) == train_ids and sorted(val) == ["000000000004"]
    for name, (image, mask) in {**train, **val}.items():
        np.testing.assert_array_equal(mask, expected[name], err_msg=name)
        assert image.shape == (H, W, 3)
    gray = val["000000000004"][0]
    assert (gray[..., 0] == gray[..., 1]).all()  # the grayscale JPEG became RGB


def test_instances_through_the_pipeline(coco_root):
    root, _ = coco_root
    cfg = _cfg(root)
    assert num_examples(cfg.data, "train") == 1
    (image, mask), = list(make_dataset(cfg, "train", training=True))
    assert image.shape == (1, 32, 32, 3) and mask.shape == (1, 32, 32)
    assert set(np.unique(mask.numpy())) <= {0, PERSON, CAR, 255}


def test_instances_bad_files(tmp_path):
    root = tmp_path / "coco"
    _make_coco(root)
    (root / "train2017" / "000000000001.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"000000000001.jpg: empty file"):
        prepare_builder(_cfg(root).data)


# --- Panoptic source (TFDS coco/2017_panoptic), on mock_data with hand-made examples ---------

PANOPTIC_NAMES = list(COCO_TO_VOC) + ["banana", "truck"] + [f"stuff{k}" for k in range(111)]
LABEL = {name: k for k, name in enumerate(PANOPTIC_NAMES)}


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg():
    buffer = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _panoptic_example(name, segments, objects):
    """segments: uint32 [H, W] ids; objects: [(id, label name, is_crowd)]."""
    rgb = np.stack([segments % 256, segments // 256 % 256, segments // 65536], -1).astype(np.uint8)
    return {"image": _jpeg(), "image/filename": f"{name}.jpg", "panoptic_image": _png(rgb),
            "panoptic_objects": {"id": np.array([o[0] for o in objects], np.int64),
                                 "label": np.array([LABEL[o[1]] for o in objects], np.int64),
                                 "is_crowd": np.array([o[2] for o in objects], bool)}}


def _panoptic_examples():
    segments = np.zeros((H, W), np.uint32)  # 0: void
    segments[:, 8:16] = 300  # person (an id above 255: spans R and G)
    segments[:, 16:24] = 70000  # a crowd of cars (id spans B)
    segments[:, 24:] = 5  # a crowd of bananas
    segments[:4, :8] = 6  # stuff
    expected = np.zeros((H, W), np.uint8)
    expected[:, 8:16] = PERSON
    expected[:, 16:24] = 255
    only_stuff = np.where(segments == 6, 6, 0).astype(np.uint32)
    examples = [
        _panoptic_example("000000000001", segments, [(300, "person", False), (70000, "car", True),
                                                     (5, "banana", True), (6, "stuff3", False)]),
        _panoptic_example("000000000002", only_stuff, [(6, "stuff3", False)]),
    ]
    return examples, expected


def _mock_as_dataset(examples):
    signature = {"image": tf.TensorSpec([], tf.string), "image/filename": tf.TensorSpec([], tf.string),
                 "panoptic_image": tf.TensorSpec([], tf.string),
                 "panoptic_objects": {"id": tf.TensorSpec([None], tf.int64), "label": tf.TensorSpec([None], tf.int64),
                                      "is_crowd": tf.TensorSpec([None], tf.bool)}}

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)

    return as_dataset


def _panoptic(examples, drop_empty):
    with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset(examples)):
        coco = tfds.builder("coco/2017_panoptic")
        coco.info.features["panoptic_objects"]["label"].names = PANOPTIC_NAMES
        return dict(panoptic_voc_examples(coco, "train", drop_empty))


def test_panoptic_mapping_and_crowds():
    examples, expected = _panoptic_examples()
    records = _panoptic(examples, drop_empty=True)
    assert list(records) == ["000000000001.jpg"]
    record = records["000000000001.jpg"]
    assert record["file_name"] == "000000000001"
    np.testing.assert_array_equal(record["mask"][..., 0], expected)
    kept = _panoptic(examples, drop_empty=False)
    np.testing.assert_array_equal(kept["000000000002.jpg"]["mask"], 0)


def test_panoptic_unknown_segment_id():
    examples, _ = _panoptic_examples()
    examples[0]["panoptic_objects"]["id"][0] = 301
    with pytest.raises(DataError, match=r"segment id\(s\) 300 missing from its segments list"):
        _panoptic(examples[:1], drop_empty=True)
