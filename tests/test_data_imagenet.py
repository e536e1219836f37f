"""ImageNet input for SS pretraining: shapes, ranges and determinism on ``tfds.testing.mock_data``; the
crops themselves on hand-made JPEGs."""

import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from exfuse_keras.config import config_from_dict
from exfuse_keras.data.checks import DataError
from exfuse_keras.data.imagenet import eval_crop, make_imagenet_dataset, train_crop

SIZE = 32


@pytest.fixture
def cfg(tmp_path):
    # The (mocked) builder reads nothing, but the archives' presence is checked first.
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (tmp_path / name).touch()
    return config_from_dict({"data": {"root": str(tmp_path), "shuffle_buffer": 4, "imagenet": {"image_size": SIZE}},
                             "train": {"batch_size": 2, "seed": 1}})


def _arrays(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_training_and_evaluation_batches(cfg):
    with tfds.testing.mock_data(num_examples=6):
        train = _arrays(make_imagenet_dataset(cfg, "train", training=True, epoch=0))
        again = _arrays(make_imagenet_dataset(cfg, "train", training=True, epoch=0))
        other_epoch = _arrays(make_imagenet_dataset(cfg, "train", training=True, epoch=1))
        val = _arrays(make_imagenet_dataset(cfg, "val", training=False, batch_size=4))
    assert len(train) == 3
    for images, labels in train + val:
        assert images.dtype == np.float32 and images.shape[1:] == (SIZE, SIZE, 3)
        assert 0.0 <= images.min() and images.max() <= 255.0 and images.std() > 1.0
        assert labels.dtype == np.int32 and ((0 <= labels) & (labels < 1000)).all()
    assert [v[0].shape[0] for v in val] == [4, 2]  # evaluation keeps the partial batch
    for (x, y), (x2, y2) in zip(train, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(train, other_epoch))


def test_missing_archives(tmp_path):
    cfg = config_from_dict({"data": {"root": str(tmp_path)}})
    with pytest.raises(DataError, match="ILSVRC2012_img_train.tar: ImageNet archive not found"):
        make_imagenet_dataset(cfg, "train", training=True)


def _jpeg(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=100, subsampling=0)
    return tf.constant(buffer.getvalue())


def test_eval_crop_is_the_resized_centre():
    # 60 x 120: the short side goes to 32 / 0.5 = 64 (width 128); the centre 32 x 32 lies in
    # the middle third of the width, painted (200, 40, 40).
    image = np.full((60, 120, 3), 30, np.uint8)
    image[:, 40:80] = (200, 40, 40)
    settings = config_from_dict({"data": {"imagenet": {"image_size": SIZE, "eval_crop_fraction": 0.5}}}).data.imagenet
    crop = eval_crop(_jpeg(image), settings).numpy()
    assert crop.shape == (SIZE, SIZE, 3)
    np.testing.assert_allclose(crop, np.broadcast_to([200, 40, 40], crop.shape), atol=3)


def test_train_crop_boxes_and_flips():
    # Left half dark, right half bright: a crop's left-right balance shows whether it flipped;
    # whole-image crops (area range [1, 1]) make that exact.
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, 32:] = 250
    settings = config_from_dict({"data": {"imagenet": {"image_size": SIZE, "crop_area_range": [1.0, 1.0]}}}
                                ).data.imagenet
    flips = 0
    for k in range(12):
        crop = train_crop(_jpeg(image), tf.constant([k, 3], tf.int64), settings).numpy()
        assert crop.shape == (SIZE, SIZE, 3)
        left, right = crop[:, :8].mean(), crop[:, -8:].mean()
        assert abs(left - right) > 200
        flips += left > right
    assert 2 <= flips <= 10
    small = config_from_dict({"data": {"imagenet": {"image_size": SIZE, "crop_area_range": [0.08, 0.2]}}}).data.imagenet
    crops = [train_crop(_jpeg(image), tf.constant([k, 4], tf.int64), small).numpy() for k in range(12)]
    # Boxes of at most a fifth of the image: some fall inside one half and are uniform.
    assert any(c.std() < 5 for c in crops)
