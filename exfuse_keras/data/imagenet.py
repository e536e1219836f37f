"""ImageNet (ILSVRC 2012) classification input, for pretraining a backbone with semantic supervision.

The paper pretrains its rearranged (LR) backbone on ImageNet with the SS heads attached
(docs/design.md, "SS"); no public weights exist for it. This reads TFDS's ``imagenet2012``,
a manual-download dataset: put ``ILSVRC2012_img_train.tar`` and ``ILSVRC2012_img_val.tar`` in
``data.imagenet.root`` (default ``data.root``); the first call prepares the records under
``data.tfds_dir`` (default ``<data.root>/tfds``).

Output of ``make_imagenet_dataset``: ``(image float32 [B, S, S, 3] RGB in 0..255, label int32
[B] in 0..999)``, S = ``data.imagenet.image_size``; the model normalises the pixels itself, as
for segmentation.

- Training: the standard "Inception" crop: a random box of ``crop_area_range`` of the image's
  area with aspect ratio in [3/4, 4/3] (the whole image when ten tries find none), decoded from
  the JPEG alone (``decode_and_crop_jpeg``), resized to S x S (bilinear), flipped at random.
- Evaluation: the short side resized to S / ``eval_crop_fraction`` (256 for 224), the centre
  S x S crop.

Shuffling, per-example seeds, epochs and sharding are those of the segmentation pipeline
(``pipeline.seeded_epochs``): with a seed and an epoch the batches are fixed.
"""

from __future__ import annotations

import os
from typing import Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from exfuse_keras.config import Config, DataConfig, ImageNetConfig
from exfuse_keras.data.checks import DataError
from exfuse_keras.data.pipeline import seeded_epochs

__all__ = ["make_imagenet_dataset", "prepare_imagenet", "train_crop", "eval_crop", "IMAGENET_DATASET"]

IMAGENET_DATASET = "imagenet2012"
_SPLITS = {"train": "train", "val": "validation"}
_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
# Tries of the random box before falling back to the whole image (as TF's official ResNet input).
_CROP_ATTEMPTS = 10


def prepare_imagenet(data: DataConfig) -> tfds.core.DatasetBuilder:
    """The ``imagenet2012`` builder with its records prepared from the manual download.

    Raises:
        DataError: the archives are not in ``data.imagenet.root`` (and no records exist yet).
    """
    builder = tfds.builder(IMAGENET_DATASET, data_dir=data.tfds_dir or os.path.join(data.root, "tfds"))
    manual_dir = data.imagenet.root or data.root
    if not builder.is_prepared():
        missing = [name for name in _ARCHIVES if not os.path.isfile(os.path.join(manual_dir, name))]
        if missing:
            raise DataError("missing", os.path.join(manual_dir, missing[0]),
                            "ImageNet archive not found; download it from https://image-net.org (see docs/data.md)")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def train_crop(encoded: tf.Tensor, seed: tf.Tensor, settings: ImageNetConfig) -> tf.Tensor:
    """Random-resized crop and flip of one JPEG.

    Args:
        encoded: string scalar, a JPEG.
        seed: int [2], a stateless random seed.
        settings: ``data.imagenet``.

    Returns:
        float32 [S, S, 3] in 0..255.
    """
    box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.io.extract_jpeg_shape(encoded), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=box_seed,
        min_object_covered=settings.crop_area_range[0], aspect_ratio_range=_ASPECT_RATIO_RANGE,
        area_range=settings.crop_area_range, max_attempts=_CROP_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    image = tf.io.decode_and_crop_jpeg(encoded, tf.stack([begin[0], begin[1], size[0], size[1]]), channels=3)
    image = tf.image.resize(image, [settings.image_size, settings.image_size], method="bilinear")
    image = tf.cond(tf.random.stateless_uniform([], flip_seed) < 0.5,
                    lambda: tf.reverse(image, [1]), lambda: image)
    image.set_shape([settings.image_size, settings.image_size, 3])
    return image


def eval_crop(encoded: tf.Tensor, settings: ImageNetConfig) -> tf.Tensor:
    """Resize (short side to S / eval_crop_fraction) and centre S x S crop of one JPEG.

    Returns:
        float32 [S, S, 3] in 0..255.
    """
    image = tf.io.decode_jpeg(encoded, channels=3)
    side = settings.image_size
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    short = tf.cast(tf.round(side / settings.eval_crop_fraction), tf.float32)
    size = tf.maximum(tf.cast(tf.round(shape * short / tf.reduce_min(shape)), tf.int32), side)
    image = tf.image.resize(image, size, method="bilinear")
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    image = image[top:top + side, left:left + side]
    image.set_shape([side, side, 3])
    return image


def make_imagenet_dataset(cfg: Config, split: str, training: bool, seed: Optional[int] = None, epoch: int = 0,
                          *, batch_size: Optional[int] = None,
                          input_context: Optional[tf.distribute.InputContext] = None,
                          repeat: bool = False) -> tf.data.Dataset:
    """Batches of (image, label) for SS pretraining or its evaluation (see module doc).

    Args:
        cfg: the full config (``data.imagenet``, ``data.shuffle_buffer``; ``train.batch_size``
            and ``train.seed`` as defaults).
        split: ``"train"`` or ``"val"`` (TFDS's ``validation``).
        training: random crops, shuffling, the last partial batch dropped; else centre crops in
            the stored order.
        seed, epoch, batch_size, input_context, repeat: as ``pipeline.make_dataset``.

    Returns:
        tf.data.Dataset of ``(float32 [B, S, S, 3], int32 [B])``.
    """
    if split not in _SPLITS:
        raise ValueError(f"make_imagenet_dataset: split must be one of {list(_SPLITS)}, got {split!r}")
    if repeat and not training:
        raise ValueError("make_imagenet_dataset: repeat=True is for training")
    data = cfg.data
    seed = cfg.train.seed if seed is None else seed
    batch_size = cfg.train.batch_size if batch_size is None else batch_size
    pipeline_id = 0
    records = prepare_imagenet(data).as_dataset(split=_SPLITS[split], shuffle_files=False,
                                                decoders={"image": tfds.decode.SkipDecoding()})
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
        records = records.shard(input_context.num_input_pipelines, pipeline_id)
    options = tf.data.Options()
    options.deterministic = True
    settings = data.imagenet
    if not training:
        dataset = records.map(lambda r: (eval_crop(r["image"], settings), tf.cast(r["label"], tf.int32)),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size)
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
    # TFDS datasets know their length; so do tfds.testing.mock_data's, whose split info is empty.
    count = int(records.cardinality())
    if count < batch_size:
        raise ValueError(f"make_imagenet_dataset: the {split} split has {count} examples for this input "
                         f"pipeline, fewer than one batch of {batch_size}")
    keyed = seeded_epochs([(records, count, 1.0)], data.shuffle_buffer, seed, epoch, pipeline_id, batch_size,
                          repeat)
    dataset = keyed.map(lambda example_seed, r: (train_crop(r["image"], example_seed, settings),
                                                 tf.cast(r["label"], tf.int32)),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).with_options(options).prefetch(tf.data.AUTOTUNE)
