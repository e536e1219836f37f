"""The tf.data pipeline: augmentation keeps image and mask aligned, padding, determinism, sharding."""

import numpy as np
import pytest
import tensorflow as tf

from exfuse_keras.config import config_from_dict
from exfuse_keras.data.pipeline import augment_example, make_dataset
from tests.data_fakes import make_fake_voc

TRAIN_IDS = [f"t{k:02d}" for k in range(10)]
VAL_IDS = [f"v{k:02d}" for k in range(5)]
MEAN = [10.0, 20.0, 30.0]
CROP = 64
# 21 well separated colours, so a pixel's colour names its label.
COLOURS = np.array([[(37 * k) % 256, (91 * k + 50) % 256, (53 * k + 100) % 256] for k in range(21)],
                   dtype=np.float32)


def _cfg(root, **data):
    return config_from_dict({"data": {"dataset": "voc", "root": str(root), "crop_size": CROP,
                                      "mean_rgb": MEAN, "shuffle_buffer": 4, **data},
                             "train": {"batch_size": 2, "seed": 3}})


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_voc")
    make_fake_voc(root, train=TRAIN_IDS, val=VAL_IDS, extra_jpegs=())
    return root


def _numpy(dataset):
    return [tuple(np.asarray(t) for t in batch) for batch in dataset]


def _block_example(height, width, seed):
    """A mask of rectangular label blocks and the image that paints each label its colour."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(np.arange(4, height - 4), size=2, replace=False))
    cols = np.sort(rng.choice(np.arange(4, width - 4), size=3, replace=False))
    labels = rng.integers(0, 21, size=(3, 4))
    mask = labels[np.searchsorted(rows, np.arange(height), side="right")][
        :, np.searchsorted(cols, np.arange(width), side="right")].astype(np.uint8)
    return COLOURS[mask].astype(np.uint8), mask


def test_augmentation_keeps_image_and_mask_aligned():
    data = _cfg("unused").data
    padded = 0
    for k in range(24):
        image, mask = _block_example(40 + k, 90 - k, k)
        out_image, out_mask = augment_example(tf.constant(image), tf.constant(mask[..., None]),
                                              tf.constant([k, 99], tf.int64), data)
        out_image, out_mask = out_image.numpy(), out_mask.numpy()
        assert out_image.shape == (CROP, CROP, 3) and out_mask.shape == (CROP, CROP)
        assert out_mask.dtype == np.int32
        assert set(np.unique(out_mask)) <= set(range(21)) | {255}
        # The source has no 255: every 255 is padding, and padding is exactly the mean colour.
        pad = out_mask == 255
        np.testing.assert_array_equal(out_image[pad], np.broadcast_to(MEAN, (pad.sum(), 3)))
        padded += pad.any()
        # Inside a label block (3x3 neighbourhood of one label) bilinear resizing keeps the
        # colour exactly, so the colour must be the label's: image and mask moved together.
        core = np.ones_like(pad)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                core[1:-1, 1:-1] &= out_mask[1 + dy:CROP - 1 + dy, 1 + dx:CROP - 1 + dx] == out_mask[1:-1, 1:-1]
        core[[0, -1], :] = core[:, [0, -1]] = False
        core &= ~pad
        assert core.sum() > 100
        np.testing.assert_allclose(out_image[core], COLOURS[out_mask[core]], atol=1e-3)
    assert padded >= 3, "no example was scaled below the crop size; the padding check did not run"


def test_flip_and_jitter_follow_their_seeds():
    """At scale 1 with crop = image size only the flip moves pixels; jitter never moves any."""
    identity_geometry = _cfg("unused", scale_range=[1.0, 1.0]).data
    jittered = _cfg("unused", scale_range=[1.0, 1.0], photometric_jitter=True).data
    no_flip = _cfg("unused", scale_range=[1.0, 1.0], flip=False).data
    image, mask = _block_example(CROP, CROP, 0)
    flips = 0
    for k in range(16):
        args = (tf.constant(image), tf.constant(mask[..., None]), tf.constant([k, 5], tf.int64))
        plain_image, plain_mask = (t.numpy() for t in augment_example(*args, identity_geometry))
        jit_image, jit_mask = (t.numpy() for t in augment_example(*args, jittered))
        _, unflipped = augment_example(*args, no_flip)
        np.testing.assert_array_equal(unflipped.numpy(), mask)
        np.testing.assert_array_equal(jit_mask, plain_mask)
        assert 0.0 <= jit_image.min() and jit_image.max() <= 255.0
        assert not np.allclose(jit_image, plain_image)
        if np.array_equal(plain_mask, mask[:, ::-1]):
            flips += 1
            np.testing.assert_array_equal(plain_image, image[:, ::-1])
        else:
            np.testing.assert_array_equal(plain_mask, mask)
            np.testing.assert_array_equal(plain_image, image)
    assert 2 <= flips <= 14


def test_training_batches_valid_labels(voc_root):
    batches = _numpy(make_dataset(_cfg(voc_root), "train", training=True, epoch=0))
    assert len(batches) == len(TRAIN_IDS) // 2
    for image, mask in batches:
        assert image.shape == (2, CROP, CROP, 3) and image.dtype == np.float32
        assert mask.shape == (2, CROP, CROP) and mask.dtype == np.int32
        assert set(np.unique(mask)) <= set(range(21)) | {255}
        assert 0.0 <= image.min() and image.max() <= 255.0


def test_same_seed_and_epoch_same_batches(voc_root):
    cfg = _cfg(voc_root)
    first = _numpy(make_dataset(cfg, "train", training=True, seed=3, epoch=2))
    # TensorFlow's global seed must not matter.
    tf.random.set_seed(1234)
    again = _numpy(make_dataset(cfg, "train", training=True, seed=3, epoch=2))
    other_epoch = _numpy(make_dataset(cfg, "train", training=True, seed=3, epoch=3))
    other_seed = _numpy(make_dataset(cfg, "train", training=True, seed=4, epoch=2))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other_epoch))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other_seed))


def test_repeat_continues_with_the_next_epochs(voc_root):
    """Each epoch is count // batch batches (leftovers dropped), so steps map to epochs exactly."""
    cfg = _cfg(voc_root)
    cfg.train.batch_size = 3
    per_epoch = len(TRAIN_IDS) // 3
    repeated = _numpy(make_dataset(cfg, "train", training=True, epoch=5, repeat=True).take(2 * per_epoch + 1))
    epoch5 = _numpy(make_dataset(cfg, "train", training=True, epoch=5))
    epoch6 = _numpy(make_dataset(cfg, "train", training=True, epoch=6))
    epoch7 = _numpy(make_dataset(cfg, "train", training=True, epoch=7))
    assert len(epoch5) == per_epoch
    for got, expected in zip(repeated, epoch5 + epoch6 + epoch7[:1]):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_too_few_examples_for_a_batch(voc_root):
    cfg = _cfg(voc_root)
    cfg.train.batch_size = len(TRAIN_IDS) + 1
    with pytest.raises(ValueError, match="train split has 10 examples for this input pipeline, fewer than"):
        make_dataset(cfg, "train", training=True)


def test_evaluation_pads_to_multiple_of_32(voc_root):
    cfg = _cfg(voc_root)
    batches = _numpy(make_dataset(cfg, "val", training=False, batch_size=2, return_meta=False))
    assert [b[0].shape for b in batches] == [(2, 64, 64, 3), (2, 64, 64, 3), (1, 64, 64, 3)]
    for images, masks, meta in make_dataset(cfg, "val", training=False, batch_size=2, return_meta=True):
        images, masks, sizes = images.numpy(), masks.numpy(), meta["size"].numpy()
        assert masks.dtype == np.int32
        np.testing.assert_array_equal(sizes, [[48, 64]] * len(sizes))
        # The fake images are 48 x 64: rows 48..63 are padding.
        assert (masks[:, 48:] == 255).all()
        np.testing.assert_array_equal(images[:, 48:], np.broadcast_to(MEAN, images[:, 48:].shape))
        assert (masks[:, :48] < 255).mean() > 0.9
        for name in meta["file_name"].numpy():
            assert name.decode() in VAL_IDS


def test_distributed_shards_and_per_replica_batch(voc_root):
    cfg = _cfg(voc_root, shuffle_buffer=100)
    cfg.train.batch_size = 4
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        sizes = []
        for images, _, meta in make_dataset(cfg, "val", training=False, return_meta=True, input_context=context):
            sizes.append(images.shape[0])
            seen.extend(n.decode() for n in meta["file_name"].numpy())
        assert max(sizes) == 2  # global 4 over 2 replicas
    assert sorted(seen) == VAL_IDS  # the shards are disjoint and cover the split
    shards = [_numpy(make_dataset(cfg, "train", training=True, input_context=tf.distribute.InputContext(2, k, 2)))
              for k in range(2)]
    assert all(b[0].shape[0] == 2 for shard in shards for b in shard)
    assert not np.array_equal(shards[0][0][1], shards[1][0][1])
