"""The tf.data input pipeline: prepared TFDS records -> augmented, batched (image, mask).

Output of ``make_dataset``:

- ``image``: float32 [B, H, W, 3], RGB in 0..255 (the model normalises it itself).
- ``mask``: int32 [B, H, W] class indices, ``data.ignore_label`` (255) where no loss or metric
  should look (VOC's object borders, and all padding). int32 because every consumer (sparse
  cross-entropy, one-hot targets, the confusion matrix) indexes with it; a mask is a small
  fraction of a batch's bytes next to the float image.

Training (``training=True``), per example: a random scale in ``data.scale_range`` (image
bilinear, mask nearest: a mask is never interpolated), padding to at least ``data.crop_size``
(image with ``data.mean_rgb``, mask with the ignore label), a random ``crop_size`` crop, optional
colour jitter and a random horizontal flip, the same geometry for image and mask (computed crop
first, so the cost does not grow with the scale: see ``augment_example``). Batches have the
static shape [B, crop, crop, ...] and the last partial batch is dropped.

Evaluation (``training=False``): images at their original size, the batch padded at the bottom
and right to a multiple of 32 (image with ``mean_rgb``, mask with the ignore label, so padding is
never scored); ``return_meta=True`` adds each example's original (height, width) and file name
for un-padding.

Determinism: randomness comes only from stateless random ops seeded by (seed, epoch, input
pipeline, position in the epoch), and the shuffle is seeded the same way, independently of
TensorFlow's global seed. The same (seed, epoch) give the same batches on every run.

Mixing (``data.dataset: mix``): each dataset of ``data.mix`` is shuffled on its own, shown
``weight`` times per epoch (a fractional part takes a random subset of one more pass), and the
datasets are interleaved in a random order drawn from the same seeds, so every batch mixes them
in proportion to their weighted sizes. An epoch of the mix has sum(round(weight x size))
examples; its val split is the val splits of the entries marked ``val: true``, one after another.

Distribution: ``train.batch_size`` is the global batch. Given the ``input_context`` of
``strategy.distribute_datasets_from_function`` (exfuse_keras/training/rundir.py), each input
pipeline reads its 1/num_input_pipelines share of the examples (of each dataset of a mix) and
batches ``global / num_replicas``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from exfuse_keras.config import OUTPUT_STRIDE, Config, ConfigError, DataConfig
from exfuse_keras.data.coco import CocoVocSegmentation, coco_builder_config
from exfuse_keras.data.folder import folder_builder
from exfuse_keras.data import scenes, shapes
from exfuse_keras.data.voc import VOC_IGNORE_LABEL, VOC_NUM_CLASSES, Voc2012Segmentation

__all__ = ["make_dataset", "prepare_builder", "prepare_sources", "Source",
           "num_examples", "augment_example", "seeded_epochs", "shard_size"]

# The built-in datasets, generated under data.root when its meta file is missing:
# dataset -> (meta file name, generator).
_BUILT_IN = {"shapes": (shapes.META_FILENAME, shapes.generate_shapes_dataset),
             "scenes": (scenes.META_FILENAME, scenes.generate_scenes_dataset)}
# Photometric jitter magnitudes of the common "PhotoMetricDistortion" recipe (mmsegmentation):
# brightness +-32 (of 255), contrast and saturation x[0.5, 1.5], hue +-18 degrees.
_BRIGHTNESS_DELTA = 32.0
_CONTRAST_RANGE = (0.5, 1.5)
_SATURATION_RANGE = (0.5, 1.5)
_HUE_DELTA = 18.0 / 360.0
# RGB -> YIQ (NTSC). Its first row is the luma that saturation blends towards; a hue shift is a
# rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)


def prepare_builder(data: DataConfig) -> tfds.core.DatasetBuilder:
    """Returns the dataset's TFDS builder with its records prepared (built once, then reused).

    Records are rebuilt when the source files have changed since they were prepared (e.g. a
    regenerated built-in dataset). ``shapes`` and ``scenes`` are generated under ``data.root``
    (``data.synthetic``'s arguments) when the folder holds none yet, or another one than
    ``data.synthetic`` asks for.

    Args:
        data: the data section of the config; one dataset (a mix: ``prepare_sources``).

    Raises:
        ConfigError: the config's classes do not match the dataset's.
        DataError: a bad source file (see exfuse_keras/data/checks.py).
    """
    if data.dataset == "mix":
        raise ValueError("prepare_builder: data.dataset 'mix' has one builder per entry; use prepare_sources")
    data_dir = data.tfds_dir or os.path.join(data.root, "tfds")
    # Several processes (the workers of a multi-worker run on one host, parallel tests) may
    # prepare the same records: one does, the others wait and reuse them.
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, ".prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepare_builder_locked(data, data_dir)


def _prepare_builder_locked(data: DataConfig, data_dir: str) -> tfds.core.DatasetBuilder:
    manual_dir = data.root if os.path.isdir(data.root) else None
    if data.dataset == "folder":
        builder = folder_builder(data, data_dir)
    else:
        if data.dataset in _BUILT_IN:
            meta_filename, generate = _BUILT_IN[data.dataset]
            # Explicit generator arguments are checked against the meta file (the generator
            # reuses a matching dataset and regenerates another); without them any dataset there
            # is taken as it is.
            if data.synthetic.arguments() or not os.path.isfile(os.path.join(data.root, meta_filename)):
                generate(data.root, **data.synthetic.arguments())
                manual_dir = data.root
        if data.dataset == "coco_voc":
            builder = CocoVocSegmentation(config=coco_builder_config(data.coco.source, data.coco.drop_empty),
                                          data_dir=data_dir)
            num_classes = VOC_NUM_CLASSES
        else:
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
    from exfuse_keras.data.progress import tfds_progress_bars

    if not builder.is_prepared() or mode != tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS:
        print(f"preparing the {data.dataset} records in {data_dir} (once; later runs reuse them)", flush=True)
    tfds_progress_bars()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode))
    if mode != tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS:
        # The instance still holds the old records' DatasetInfo; a fresh one reads the new.
        builder = builder.__class__(config=builder.builder_config, data_dir=data_dir)
    return builder


@dataclasses.dataclass(frozen=True)
class Source:
    """One prepared dataset of the training set: the whole of it, or one entry of a mix.

    Attributes:
        builder: its prepared TFDS builder.
        weight: how many times an epoch shows each of its examples (see module doc).
        val: whether its val split is part of the val split.
    """

    builder: tfds.core.DatasetBuilder
    weight: float = 1.0
    val: bool = True


def prepare_sources(data: DataConfig) -> list[Source]:
    """The prepared dataset(s) of the config: one, or one per entry of ``data.mix``.

    Raises:
        ConfigError, DataError: as ``prepare_builder``, for any of them.
    """
    if data.dataset != "mix":
        return [Source(prepare_builder(data))]
    return [Source(prepare_builder(data.mix_entry(c)), c.weight, c.val) for c in data.mix]


def shard_size(count: int, input_context: Optional[tf.distribute.InputContext]) -> int:
    """How many of ``count`` records one input pipeline reads (every n-th, from its id)."""
    if input_context is None:
        return count
    return len(range(input_context.input_pipeline_id, count, input_context.num_input_pipelines))


def _weighted_size(count: int, weight: float) -> int:
    return round(weight * count)


def num_examples(data: DataConfig, split: str,
                 input_context: Optional[tf.distribute.InputContext] = None) -> int:
    """The examples one pass over a split yields (preparing the records if needed).

    For ``train`` of a mix, one epoch: sum(round(weight x size)) over its datasets; for
    ``val``, the val splits of its ``val: true`` entries.

    Args:
        data: the data section.
        split: ``"train"`` or ``"val"``.
        input_context: count only this input pipeline's share (as ``make_dataset`` reads it).
    """
    sources = prepare_sources(data)
    if split == "train":
        return sum(_weighted_size(shard_size(s.builder.info.splits[split].num_examples, input_context), s.weight)
                   for s in sources)
    return sum(shard_size(s.builder.info.splits[split].num_examples, input_context)
               for s in evaluation_sources(sources, split))


def evaluation_sources(sources: list, split: str) -> list:
    """The prepared datasets whose ``split`` is evaluated: for ``val``, the ``val: true`` entries
    (every dataset but a mix's others); for ``test``, those that have one.

    Raises:
        ConfigError: no dataset has the split (a folder dataset's test split comes from
            ``data.folder.test_list``).
    """
    if split == "val":
        return [s for s in sources if s.val]
    found = [s for s in sources if split in s.builder.info.splits]
    if not found:
        raise ConfigError(f"the dataset has no {split!r} split (its splits: "
                         f"{', '.join(sorted(sources[0].builder.info.splits))}); a folder dataset gets a test "
                         "split from data.folder.test_list")
    return found


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
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return records, shard_size(count, input_context)


def _decode(record: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """Encoded record -> (image uint8 [H, W, 3], mask uint8 [H, W, 1])."""
    image = tf.io.decode_image(record["image"], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    mask = tf.io.decode_png(record["mask"], channels=1)
    return image, mask


def _photometric_jitter(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random brightness, contrast, saturation and hue of a float 0..255 RGB image.

    All four are linear in the pixel values, so they are composed into one affine colour
    transform and applied in a single pass (the HSV round trips of ``tf.image``'s saturation
    and hue cost about five times more): brightness adds a constant, contrast scales about the
    image's mean colour, saturation blends with the luma, hue rotates the YIQ chroma plane (the
    linear hue shift of e.g. NVIDIA DALI). The result is clipped to 0..255 once, at the end.

    Args:
        image: float32 [H, W, 3] in 0..255.
        seed: int [2], a stateless random seed.

    Returns:
        float32 [H, W, 3] in 0..255.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    brightness = tf.random.stateless_uniform([], seeds[0], -_BRIGHTNESS_DELTA, _BRIGHTNESS_DELTA)
    contrast = tf.random.stateless_uniform([], seeds[1], *_CONTRAST_RANGE)
    saturation = tf.random.stateless_uniform([], seeds[2], *_SATURATION_RANGE)
    angle = tf.random.stateless_uniform([], seeds[3], -_HUE_DELTA, _HUE_DELTA) * 2.0 * np.pi
    # The contrast pivot needs no precision: every 4th pixel each way gives the mean at 1/16 the cost.
    pivot = tf.reduce_mean(image[::4, ::4], axis=[0, 1]) + brightness
    luma = tf.constant(_RGB_TO_YIQ[0])
    # Row-vector convention (pixel @ matrix), in the order brightness, contrast, saturation, hue.
    saturate = saturation * tf.eye(3) + (1.0 - saturation) * luma[:, None] * tf.ones([1, 3])
    cos, sin = tf.cos(angle), tf.sin(angle)
    rotate = tf.stack([tf.constant([1.0, 0.0, 0.0]), tf.stack([0.0, cos, sin]), tf.stack([0.0, -sin, cos])])
    hue = tf.constant(_RGB_TO_YIQ.T) @ rotate @ tf.constant(np.linalg.inv(_RGB_TO_YIQ).T)
    colour = saturate @ hue
    offset = (((brightness - pivot) * contrast + pivot)[None, :] @ colour)[0]
    shifted = tf.reshape(image, [-1, 3]) @ (contrast * colour) + offset
    return tf.clip_by_value(tf.reshape(shifted, tf.shape(image)), 0.0, 255.0)


def _resize_nearest(mask: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """``tf.image.resize(mask, size, "nearest")`` of a 2-D mask by gathering rows (five times as fast).

    Output pixel i takes input pixel floor((i + 0.5) * in / out), as TensorFlow's half-pixel
    nearest resize does: the pixel whose centre is nearest to where bilinear resizing samples.
    Columns are gathered as the rows of the transposed mask: a gather along the last axis copies
    one byte at a time, while whole rows are block copies, and the two transposes of a uint8
    mask cost less than that per-element gather (0.3 ms against 2 ms at 512x512).

    Args:
        mask: [H, W] (uint8 class indices).
        size: int32 [2], the output (height, width).
    """

    def source(n_in, n_out):
        step = tf.cast(n_in, tf.float32) / tf.cast(n_out, tf.float32)
        return tf.minimum(tf.cast(tf.floor((tf.range(n_out, dtype=tf.float32) + 0.5) * step), tf.int32), n_in - 1)

    shape = tf.shape(mask)
    columns = tf.gather(tf.transpose(mask), source(shape[1], size[1]))
    return tf.gather(tf.transpose(columns), source(shape[0], size[0]))


def _pad_and_flip(x: tf.Tensor, fill: tf.Tensor, crop: int, flip: Optional[tf.Tensor]) -> tf.Tensor:
    """Pads ``x`` [h, w, ...] with ``fill`` at the bottom and right to [crop, crop, ...], then
    mirrors it left-right when ``flip`` (so the padding is then on the left).

    By concatenating blocks of ``fill``: ``tf.pad`` takes one scalar fill only, and padding
    with zeros and then selecting the mean colour with ``tf.where`` (or adding it) goes through
    TensorFlow's slow broadcasting path for a trailing dimension of 3, about 15 times the cost
    of these copies. The flip reverses only the h x w content, before it is padded.

    Args:
        x: [h, w] or [h, w, C], h and w at most ``crop``.
        fill: scalar or [C], of x's dtype.
        crop: the output side.
        flip: bool scalar tensor; None: never flip.
    """
    shape = tf.shape(x)
    right = tf.broadcast_to(fill, tf.concat([[shape[0], crop - shape[1]], shape[2:]], 0))
    if flip is None:
        x = tf.concat([x, right], axis=1)
    else:
        x = tf.cond(flip, lambda: tf.concat([right, tf.reverse(x, [1])], axis=1),
                    lambda: tf.concat([x, right], axis=1))
    bottom = tf.broadcast_to(fill, tf.concat([[crop - shape[0], crop], shape[2:]], 0))
    return tf.concat([x, bottom], axis=0)


def augment_example(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
                    data: DataConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """Training augmentation of one example (see module doc); a pure function of ``seed``.

    Scaling the whole image by s, padding it to the crop size and cropping is computed crop
    first: the source window of crop / s pixels (or the whole side, when the scaled side is
    smaller than the crop) at a random offset is cut out, scaled to at most ``crop_size``
    pixels and padded at the bottom and right. Only pixels that reach the output are resized,
    jittered or padded, whatever the scale.

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
    scale = tf.random.stateless_uniform([], scale_seed, data.scale_range[0], data.scale_range[1])
    source_size = tf.shape(image)[:2]
    window = tf.minimum(tf.maximum(tf.cast(tf.round(crop / scale), tf.int32), 1), source_size)
    # u < 1, so each offset lies in [0, source size - window].
    offset = tf.cast(tf.floor(tf.random.stateless_uniform([2], crop_seed)
                              * tf.cast(source_size - window + 1, tf.float32)), tf.int32)
    image = tf.cast(image[offset[0]:offset[0] + window[0], offset[1]:offset[1] + window[1]], tf.float32)
    mask = mask[offset[0]:offset[0] + window[0], offset[1]:offset[1] + window[1]]
    if data.photometric_jitter:
        # Before padding, so the padding stays exactly the mean colour.
        image = _photometric_jitter(image, jitter_seed)

    # A window cut to the crop fills it exactly (rounding could leave a row of padding).
    size = tf.where(window < source_size, crop,
                    tf.clip_by_value(tf.cast(tf.round(tf.cast(window, tf.float32) * scale), tf.int32), 1, crop))
    image = tf.image.resize(image, size, method="bilinear")
    mask = _resize_nearest(mask[..., 0], size)
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5 if data.flip else None
    image = _pad_and_flip(image, tf.constant(data.mean_rgb, tf.float32), crop, flip)
    mask = _pad_and_flip(mask, tf.constant(data.ignore_label, mask.dtype), crop, flip)
    image.set_shape([crop, crop, 3])
    mask.set_shape([crop, crop])
    return image, tf.cast(mask, tf.int32)


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
        cfg (Config): the full config (``data`` section; ``train.batch_size`` and
            ``train.seed`` as defaults).
        split (str): ``"train"``, ``"val"`` or ``"test"`` (a folder dataset's ``data.folder.test_list``).
        training (bool): augment, shuffle and drop the last partial batch; else evaluation
            batches.
        seed (int | None): data seed; default ``cfg.train.seed``.
        epoch (int): the epoch whose batches to produce. (seed, epoch) fix the batches exactly.
        batch_size (int | None): the global batch; default ``cfg.train.batch_size``. Under
            ``input_context`` each pipeline batches the per-replica share.
        input_context (tf.distribute.InputContext | None): from
            ``distribute_datasets_from_function``; shards the records.
        repeat (bool): training only: continue with epoch + 1, epoch + 2, ... (each seeded by
            its own epoch number) instead of stopping after one epoch.
        return_meta (bool): evaluation only: add a third element ``{"size": int32 [B, 2]
            original (height, width), "file_name": string [B]}``.

    Returns:
        tf.data.Dataset of ``(image float32 [B, H, W, 3], mask int32 [B, H, W])`` (plus meta).

    Example::

        from exfuse_keras import load_config

        cfg = load_config("configs/quickstart.yaml")
        train = make_dataset(cfg, "train", training=True, repeat=True)   # [8, 128, 128, 3], [8, 128, 128]
        val = make_dataset(cfg, "val", training=False, batch_size=1)     # original sizes, padded to 32
    """
    if training and cfg.data.crop_size == "auto":  # sizing.py measures it (and imports this module)
        raise ConfigError("data.crop_size is auto: it is measured from the data by train.py, or by "
                          "exfuse_keras.data.sizing.resolve_auto_sizes(cfg) before a training pipeline is built")
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
    sources = prepare_sources(data)
    options = tf.data.Options()
    options.deterministic = True
    if training:
        weighted = [(*_read_records(s.builder, split, input_context), s.weight) for s in sources]
        count = sum(_weighted_size(n, weight) for _, n, weight in weighted)
        if count < batch_size:
            raise ValueError(f"make_dataset: the {split} split has {count} examples for this input pipeline, "
                             f"fewer than one batch of {batch_size}")
        keyed = seeded_epochs(weighted, data.shuffle_buffer, seed, epoch, pipeline_id, batch_size, repeat)

        def augment(example_seed, record):
            image, mask = _decode(record)
            return augment_example(image, mask, example_seed, data)

        dataset = keyed.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
            .batch(batch_size, drop_remainder=True)
    else:
        parts = [_read_records(s.builder, split, input_context)[0] for s in
                 (sources if split == "train" else evaluation_sources(sources, split))]
        records = parts[0]
        for part in parts[1:]:
            records = records.concatenate(part)
        dataset = _evaluation_batches(records, data, batch_size, return_meta)
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _weighted_pass(records: tf.data.Dataset, count: int, weight: float, shuffle_buffer: int,
                   key: tf.Tensor) -> tf.data.Dataset:
    """One epoch's share of one dataset: round(weight x count) records, shuffled.

    Whole passes each reshuffle all records; a fractional pass takes a uniformly random
    ``part`` of them (those whose rank in a seeded permutation is below ``part``), which a
    shuffle buffer followed by ``take`` would not: it would favour the stored order's start.

    Args:
        records: the dataset's records (this input pipeline's shard), ``count`` of them.
        weight: see ``MixComponent``.
        shuffle_buffer: ``data.shuffle_buffer``.
        key: int64 [2], this dataset's seed for this epoch.
    """
    full, part = divmod(_weighted_size(count, weight), count)
    passes = [tf.data.Dataset.range(full).flat_map(
        lambda p: _seeded_shuffle(records, shuffle_buffer, tf.random.experimental.stateless_fold_in(key, p)))]
    if part:
        subset_key, shuffle_key = tf.unstack(tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(key, full), 2))
        rank = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), subset_key)
        subset = records.enumerate().filter(lambda index, _: rank[index] < part).map(lambda _, record: record)
        passes.append(_seeded_shuffle(subset, shuffle_buffer, tf.cast(shuffle_key, tf.int64)))
    stream = passes[0]
    for more in passes[1:]:
        stream = stream.concatenate(more)
    return stream


def seeded_epochs(sources: Sequence[tuple[tf.data.Dataset, int, float]], shuffle_buffer: int, seed: int,
                  epoch: int, pipeline_id: int, batch_size: int, repeat: bool) -> tf.data.Dataset:
    """The examples of one epoch (or, with ``repeat``, of epoch, epoch + 1, ...), each with its seed.

    A pure function of (seed, epoch, pipeline_id): see the module doc for shuffling and mixing.
    Every epoch has exactly total // batch_size * batch_size examples (total = sum of
    round(weight x count)): its leftover examples are dropped, so a global step maps to (epoch,
    batch in epoch) whether or not epochs repeat.

    Args:
        sources: (records, count, weight) per dataset; records of one element structure.
        shuffle_buffer: examples shuffled at a time, per dataset.
        seed: the data seed.
        epoch: the first epoch.
        pipeline_id: this input pipeline's id (its records are its own shard).
        batch_size: the batch the caller will form (per input pipeline).
        repeat: continue with the next epochs.

    Returns:
        tf.data.Dataset of (example seed int64 [2], record).
    """
    sizes = [_weighted_size(count, weight) for _, count, weight in sources]
    examples_per_epoch = sum(sizes) // batch_size * batch_size

    def one_epoch(epoch_number):
        shuffle_key, example_key = _epoch_keys(seed, epoch_number, pipeline_id)
        streams = [_weighted_pass(records, count, weight, shuffle_buffer,
                                  tf.random.experimental.stateless_fold_in(shuffle_key, k))
                   for k, (records, count, weight) in enumerate(sources)]
        if len(streams) == 1:
            mixed = streams[0]
        else:
            # Which dataset gives each example of the epoch: every dataset's share, in a seeded order.
            choice = tf.random.experimental.stateless_shuffle(
                tf.repeat(tf.range(len(sizes), dtype=tf.int64), sizes),
                tf.random.experimental.stateless_fold_in(shuffle_key, len(sources)))
            mixed = tf.data.Dataset.choose_from_datasets(streams, tf.data.Dataset.from_tensor_slices(choice))
        # Each example's seed comes from its position in the epoch, so it does not depend on
        # how the parallel map that consumes it schedules work.
        return mixed.take(examples_per_epoch).enumerate().map(
            lambda index, record: (tf.random.experimental.stateless_fold_in(example_key, index), record))

    if repeat:
        return tf.data.Dataset.counter(epoch).flat_map(one_epoch)
    return one_epoch(tf.constant(epoch, tf.int64))


def _evaluation_batches(records, data: DataConfig, batch_size: int, return_meta: bool) -> tf.data.Dataset:
    def decode(record):
        image, mask = _decode(record)
        return tf.cast(image, tf.float32), mask, tf.shape(image)[:2], record["file_name"]

    batches = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).padded_batch(
        batch_size, padded_shapes=([None, None, 3], [None, None, 1], [2], []),
        padding_values=(0.0, tf.constant(data.ignore_label, tf.uint8), 0, ""))

    def pad_to_multiple(images, masks, sizes, file_names):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        pad_h = -height % OUTPUT_STRIDE
        pad_w = -width % OUTPUT_STRIDE
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
