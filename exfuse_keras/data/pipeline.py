"""The tf.data input pipeline: prepared TFDS records -> augmented, batched (image, mask).

Output of ``make_dataset``:

- ``image``: float32 [B, H, W, 3], RGB in 0..255 (the model normalises it itself).
- ``mask``: int32 [B, H, W] class indices, ``data.ignore_label`` (255) where no loss or metric
  should look (VOC's object borders, and all padding). int32 because every consumer (sparse
  cross-entropy, one-hot targets, the confusion matrix) indexes with it; a mask is a small
  fraction of a batch's bytes next to the float image.

Training (``training=True``), per example: optional colour jitter, a random scale in
``data.scale_range`` (image bilinear, mask nearest: a mask is never interpolated), padding to at
least ``data.crop_size`` (image with ``data.mean_rgb``, mask with the ignore label), a random
``crop_size`` crop and a random horizontal flip, the same geometry for image and mask. Batches
have the static shape [B, crop, crop, ...] and the last partial batch is dropped.

Evaluation (``training=False``): images at their original size, the batch padded at the bottom
and right to a multiple of 32 (image with ``mean_rgb``, mask with the ignore label, so padding is
never scored); ``return_meta=True`` adds each example's original (height, width) and file name
for un-padding.

Determinism: randomness comes only from stateless random ops seeded by (seed, epoch, input
pipeline, position in the epoch), and the shuffle is seeded the same way, independently of
TensorFlow's global seed. The same (seed, epoch) give the same batches on every run.

Distribution: ``train.batch_size`` is the global batch. ``distributed_dataset_fn`` returns the
function for ``strategy.distribute_datasets_from_function``: each input pipeline reads its
1/num_input_pipelines share of the examples and batches ``global / num_replicas``.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from exfuse_keras.config import Config, ConfigError, DataConfig
from exfuse_keras.data.folder import folder_builder
from exfuse_keras.data.shapes import META_FILENAME, generate_shapes_dataset
from exfuse_keras.data.voc import VOC_IGNORE_LABEL, Voc2012Segmentation

__all__ = ["make_dataset", "distributed_dataset_fn", "prepare_builder", "num_examples", "augment_example",
           "EVAL_PAD_MULTIPLE"]

# The network's output stride: evaluation inputs are padded to a multiple of it.
EVAL_PAD_MULTIPLE = 32
# Photometric jitter magnitudes of the common "PhotoMetricDistortion" recipe (mmsegmentation):
# brightness +-32 (of 255), contrast and saturation x[0.5, 1.5], hue +-18 degrees.
_BRIGHTNESS_DELTA = 32.0
_CONTRAST_RANGE = (0.5, 1.5)
_SATURATION_RANGE = (0.5, 1.5)
_HUE_DELTA = 18.0 / 360.0


def prepare_builder(data: DataConfig) -> tfds.core.DatasetBuilder:
    """Returns the dataset's TFDS builder with its records prepared (built once, then reused).

    Records are rebuilt when the source files have changed since they were prepared (e.g. a
    regenerated built-in dataset). ``shapes`` is generated under ``data.root`` (default
    arguments) when the folder holds none yet.

    Args:
        data: the data section of the config.

    Raises:
        ConfigError: the config's classes do not match the dataset's.
        DataError: a bad source file (see exfuse_keras/data/checks.py).
    """
    data_dir = data.tfds_dir or os.path.join(data.root, "tfds")
    manual_dir = data.root if os.path.isdir(data.root) else None
    if data.dataset == "folder":
        builder = folder_builder(data, data_dir)
    else:
        if data.dataset == "shapes" and not os.path.isfile(os.path.join(data.root, META_FILENAME)):
            generate_shapes_dataset(data.root)
            manual_dir = data.root
        builder = Voc2012Segmentation(config=data.dataset, data_dir=data_dir)
        num_classes = builder.builder_config.num_classes
        if data.num_classes != num_classes:
            raise ConfigError(f"data.num_classes is {data.num_classes} but dataset {data.dataset!r} "
                              f"has {num_classes} classes")
        if data.ignore_label != VOC_IGNORE_LABEL:
            raise ConfigError(f"data.ignore_label must be {VOC_IGNORE_LABEL} for dataset {data.dataset!r} "
                              f"(its masks mark void pixels {VOC_IGNORE_LABEL}), got {data.ignore_label}")
    mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    if builder.is_prepared() and \
            builder.info.metadata.get("source_fingerprint") != builder.source_fingerprint(manual_dir):
        mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS  # keep downloads, rebuild records
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode))
    if mode != tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS:
        # The instance still holds the old records' DatasetInfo; a fresh one reads the new.
        builder = builder.__class__(config=builder.builder_config, data_dir=data_dir)
    return builder


def num_examples(data: DataConfig, split: str) -> int:
    """The number of examples in a split (preparing the records if needed)."""
    return prepare_builder(data).info.splits[split].num_examples


def _read_records(builder: tfds.core.DatasetBuilder, split: str,
                  input_context: Optional[tf.distribute.InputContext]) -> tuple[tf.data.Dataset, int]:
    """The split's records, still encoded, in their fixed stored order.

    Args:
        builder: a prepared builder.
        split: ``"train"`` or ``"val"``.
        input_context: when given, only this input pipeline's share (every n-th record).

    Returns:
        (dataset of ``{"image": string (JPEG/PNG), "mask": string (PNG), "file_name": string}``,
        its number of records).
    """
    records = builder.as_dataset(
        split=split, shuffle_files=False,
        # Decoding happens in the pipeline's parallel map, fused with the augmentation.
        decoders={"image": tfds.decode.SkipDecoding(), "mask": tfds.decode.SkipDecoding()})
    count = builder.info.splits[split].num_examples
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        records = records.shard(pipelines, pipeline_id)
        count = len(range(pipeline_id, count, pipelines))
    return records, count


def _decode(record: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """Encoded record -> (image uint8 [H, W, 3], mask uint8 [H, W, 1])."""
    image = tf.io.decode_image(record["image"], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    mask = tf.io.decode_png(record["mask"], channels=1)
    return image, mask


def _pad_image(image: tf.Tensor, paddings, colour) -> tf.Tensor:
    """Pads a float [H, W, 3] image with a per-channel colour (tf.pad takes one scalar)."""
    return tf.stack([tf.pad(image[..., c], paddings, constant_values=colour[c]) for c in range(3)], axis=-1)


def _photometric_jitter(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random brightness, contrast, saturation and hue of a float 0..255 RGB image."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    image = tf.image.stateless_random_brightness(image, _BRIGHTNESS_DELTA, seeds[0])
    image = tf.image.stateless_random_contrast(image, *_CONTRAST_RANGE, seeds[1])
    image = tf.clip_by_value(image, 0.0, 255.0)
    # Saturation and hue work in HSV, which expects 0..1.
    image = tf.image.stateless_random_saturation(image / 255.0, *_SATURATION_RANGE, seeds[2])
    image = tf.image.stateless_random_hue(image, _HUE_DELTA, seeds[3])
    return tf.clip_by_value(image * 255.0, 0.0, 255.0)


def augment_example(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
                    data: DataConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """Training augmentation of one example (see module doc); a pure function of ``seed``.

    Args:
        image: uint8 [H, W, 3] RGB.
        mask: uint8 [H, W, 1] class indices.
        seed: int [2], a stateless random seed.
        data: the data section (crop_size, scale_range, flip, photometric_jitter, mean_rgb,
            ignore_label).

    Returns:
        (image float32 [crop, crop, 3] in 0..255, mask int32 [crop, crop]).
    """
    crop = data.crop_size
    scale_seed, crop_seed, flip_seed, jitter_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    image = tf.cast(image, tf.float32)
    if data.photometric_jitter:
        # On the original pixels: the cost does not grow with the random scale, and the padding
        # added below stays exactly the mean colour.
        image = _photometric_jitter(image, jitter_seed)

    scale = tf.random.stateless_uniform([], scale_seed, data.scale_range[0], data.scale_range[1])
    size = tf.maximum(tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32), 1)
    image = tf.image.resize(image, size, method="bilinear")
    mask = tf.image.resize(mask, size, method="nearest")

    pad = tf.maximum(crop - size, 0)
    paddings = [[0, pad[0]], [0, pad[1]]]
    image = _pad_image(image, paddings, data.mean_rgb)
    mask = tf.pad(mask, paddings + [[0, 0]], constant_values=data.ignore_label)

    # u < 1, so each offset lies in [0, padded size - crop].
    free = tf.cast(size + pad - crop + 1, tf.float32)
    offset = tf.cast(tf.floor(tf.random.stateless_uniform([2], crop_seed) * free), tf.int32)
    image = image[offset[0]:offset[0] + crop, offset[1]:offset[1] + crop]
    mask = mask[offset[0]:offset[0] + crop, offset[1]:offset[1] + crop]

    if data.flip:
        flip = tf.random.stateless_uniform([], flip_seed) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    image.set_shape([crop, crop, 3])
    mask.set_shape([crop, crop, 1])
    return image, tf.cast(mask[..., 0], tf.int32)


def _seeded_shuffle(dataset: tf.data.Dataset, buffer_size: int, seed: tf.Tensor) -> tf.data.Dataset:
    """``dataset.shuffle(buffer_size)`` whose order depends on ``seed`` (int64 [2]) only.

    ``Dataset.shuffle(seed=...)`` also mixes in TensorFlow's global seed (``tf.random.set_seed``,
    ``keras.utils.set_random_seed``), so the same data seed could give another order in another
    program. The shuffle op itself takes the two seeds explicitly.
    """
    spec = dataset.element_spec
    components = tf.nest.flatten(spec)
    variant = tf.raw_ops.ShuffleDataset(
        input_dataset=tf.data.experimental.to_variant(dataset),
        buffer_size=tf.constant(buffer_size, tf.int64),
        # (0, 0) would ask the op for fresh random seeds; the odd seed2 rules that out.
        seed=seed[0], seed2=tf.bitwise.bitwise_or(seed[1], 1),
        output_types=[c.dtype for c in components], output_shapes=[c.shape for c in components],
        reshuffle_each_iteration=False)
    return tf.data.experimental.from_variant(variant, spec)


def _epoch_keys(seed: int, epoch: tf.Tensor, pipeline_id: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Stateless seeds (shuffle, examples) of one epoch of one input pipeline, int64 [2] each."""
    key = tf.constant([seed, pipeline_id], tf.int64)
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(epoch, tf.int64))
    shuffle_key, example_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    return tf.cast(shuffle_key, tf.int64), example_key


def make_dataset(cfg: Config, split: str, training: bool, seed: Optional[int] = None, epoch: int = 0, *,
                 batch_size: Optional[int] = None, input_context: Optional[tf.distribute.InputContext] = None,
                 repeat: bool = False, return_meta: bool = False) -> tf.data.Dataset:
    """Batches of (image, mask) for training or evaluation (see module doc for shapes).

    Args:
        cfg: the full config (``data`` section; ``train.batch_size`` and ``train.seed`` as
            defaults).
        split: ``"train"`` or ``"val"``.
        training: augment, shuffle and drop the last partial batch; else evaluation batches.
        seed: data seed; default ``cfg.train.seed``.
        epoch: the epoch whose batches to produce. (seed, epoch) fix the batches exactly.
        batch_size: the global batch; default ``cfg.train.batch_size``. Under ``input_context``
            each pipeline batches the per-replica share.
        input_context: from ``distribute_datasets_from_function``; shards the records.
        repeat: training only: continue with epoch + 1, epoch + 2, ... (each seeded by its
            own epoch number) instead of stopping after one epoch.
        return_meta: evaluation only: add a third element ``{"size": int32 [B, 2] original
            (height, width), "file_name": string [B]}``.

    Returns:
        tf.data.Dataset of ``(image float32 [B, H, W, 3], mask int32 [B, H, W])`` (plus meta).
    """
    data = cfg.data
    seed = cfg.train.seed if seed is None else seed
    batch_size = cfg.train.batch_size if batch_size is None else batch_size
    pipeline_id = 0
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
    if repeat and not training:
        raise ValueError("make_dataset: repeat=True is for training; evaluation reads each example once")
    if return_meta and training:
        raise ValueError("make_dataset: return_meta=True is for evaluation")
    records, count = _read_records(prepare_builder(data), split, input_context)
    options = tf.data.Options()
    options.deterministic = True
    if training:
        if count < batch_size:
            raise ValueError(f"make_dataset: the {split} split has {count} examples for this input pipeline, "
                             f"fewer than one batch of {batch_size}")
        dataset = _training_batches(records, count, data, seed, epoch, pipeline_id, batch_size, repeat)
    else:
        dataset = _evaluation_batches(records, data, batch_size, return_meta)
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _training_batches(records, count: int, data: DataConfig, seed: int, epoch: int, pipeline_id: int,
                      batch_size: int, repeat: bool) -> tf.data.Dataset:
    # Every epoch yields exactly count // batch_size batches (its leftover examples are
    # dropped), so a global step maps to (epoch, batch in epoch) whether or not epochs repeat.
    examples_per_epoch = count // batch_size * batch_size

    def one_epoch(epoch_number):
        shuffle_key, example_key = _epoch_keys(seed, epoch_number, pipeline_id)
        shuffled = _seeded_shuffle(records, data.shuffle_buffer, shuffle_key).take(examples_per_epoch)
        # Each example's seed comes from its position in the epoch, so it does not depend on
        # how the parallel map below schedules work.
        return shuffled.enumerate().map(
            lambda index, record: (tf.random.experimental.stateless_fold_in(example_key, index), record))

    if repeat:
        keyed = tf.data.Dataset.counter(epoch).flat_map(one_epoch)
    else:
        keyed = one_epoch(tf.constant(epoch, tf.int64))

    def augment(example_seed, record):
        image, mask = _decode(record)
        return augment_example(image, mask, example_seed, data)

    return keyed.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
        .batch(batch_size, drop_remainder=True)


def _evaluation_batches(records, data: DataConfig, batch_size: int, return_meta: bool) -> tf.data.Dataset:
    def decode(record):
        image, mask = _decode(record)
        return tf.cast(image, tf.float32), mask, tf.shape(image)[:2], record["file_name"]

    batches = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).padded_batch(
        batch_size, padded_shapes=([None, None, 3], [None, None, 1], [2], []),
        padding_values=(0.0, tf.constant(data.ignore_label, tf.uint8), 0, ""))

    def pad_to_multiple(images, masks, sizes, file_names):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        pad_h = -height % EVAL_PAD_MULTIPLE
        pad_w = -width % EVAL_PAD_MULTIPLE
        images = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        masks = tf.pad(masks, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], constant_values=data.ignore_label)
        # Everything outside each image's own extent (batch padding included) gets the mean
        # colour, as in training.
        rows = tf.range(height + pad_h)[None, :, None] < sizes[:, 0, None, None]
        cols = tf.range(width + pad_w)[None, None, :] < sizes[:, 1, None, None]
        images = tf.where((rows & cols)[..., None], images, tf.constant(data.mean_rgb, tf.float32))
        masks = tf.cast(masks[..., 0], tf.int32)
        if return_meta:
            return images, masks, {"size": sizes, "file_name": file_names}
        return images, masks

    return batches.map(pad_to_multiple, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def distributed_dataset_fn(cfg: Config, split: str, training: bool, seed: Optional[int] = None,
                           epoch: int = 0, **kwargs) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """The dataset function for ``strategy.distribute_datasets_from_function``.

    Prepares the records first (once, here, rather than in every input pipeline), then each
    call builds ``make_dataset`` for its input pipeline: per-replica batch
    ``batch_size / num_replicas_in_sync`` and a 1/num_input_pipelines shard of the records.

    Args:
        cfg, split, training, seed, epoch: as ``make_dataset``.
        **kwargs: ``batch_size`` (global), ``repeat``, ``return_meta`` for ``make_dataset``.

    Example::

        dist = strategy.distribute_datasets_from_function(
            distributed_dataset_fn(cfg, "train", training=True, epoch=epoch))
    """
    prepare_builder(cfg.data)

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(cfg, split, training, seed, epoch, input_context=input_context, **kwargs)

    return dataset_fn
