"""Input-pipeline throughput: a plain tf.data pipeline against ours, in one run, on the same data.

Usage::

    python -m exfuse_keras.bench.input_pipeline [--root DIR] [--num-images 300] [--crop 512]
        [--batch 8] [--warmup 10] [--batches 100] [--rounds 2] [--no-jitter]

Writes VOC-layout data itself (``--num-images`` 500x375 JPEGs with palette PNG masks, like VOC's
images; in a temporary folder unless ``--root`` names one, which is reused when it holds data),
then measures img/s of

- **plain**: the tf.data pipeline one would write first: read and decode the JPEG and PNG, random
  scale 0.5-2 (image bilinear, mask nearest), pad to the crop, random crop, random flip, batch,
  AUTOTUNE parallelism and prefetch;
- **ours**: ``pipeline.make_dataset`` on the same images prepared as TFDS records, with all its
  augmentation (the same geometry plus photometric jitter, mean-colour padding, seeded
  randomness).

Each measurement starts a fresh iterator, discards ``--warmup`` batches, then times ``--batches``
batches (enough of them that what the pipeline buffered during the warm-up does not count); the
two pipelines alternate for ``--rounds`` rounds (the order swapping each round), so both see the
same machine state. Machines are noisy: compare figures from the same run only.
Prints each measurement, the mean img/s of each pipeline and the ratio ours / plain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from exfuse_keras.data.palette import voc_palette, write_palette_png
from exfuse_keras.data.voc import VOC_SUBDIR

__all__ = ["write_voc_like_data", "plain_dataset", "measure", "main"]

IMAGE_SIZE = (375, 500)  # H, W of a typical (landscape) VOC image
SCALE_RANGE = (0.5, 2.0)


def write_voc_like_data(root, num_images: int, seed: int = 0) -> list[str]:
    """Writes ``num_images`` VOC-like examples under ``root/VOCdevkit/VOC2012`` (all in train).

    Images are smooth random colour fields with objects and noise, about 95 kB as JPEG
    (quality 95; VOC 2012's JPEGs average about 110 kB), so decoding costs about what it costs
    on VOC.
    Masks hold a few objects of random classes with VOC's 255 border ring.

    Returns:
        the example ids.
    """
    voc = Path(root) / VOC_SUBDIR
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = IMAGE_SIZE
    ids = [f"bench_{k:05d}" for k in range(num_images)]
    for example_id in ids:
        background = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
            (width, height), Image.BICUBIC)
        draw = ImageDraw.Draw(background)
        mask = Image.new("L", (width, height), 0)
        mask_draw = ImageDraw.Draw(mask)
        for _ in range(rng.integers(1, 5)):
            x0, y0 = rng.integers(0, width - 60), rng.integers(0, height - 60)
            box = [x0, y0, x0 + rng.integers(40, 250), y0 + rng.integers(40, 200)]
            draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            mask_draw.ellipse(box, fill=int(rng.integers(1, 21)), outline=255, width=4)
        pixels = np.asarray(background, np.float32) + rng.normal(0.0, 9.0, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            voc / "JPEGImages" / f"{example_id}.jpg", quality=95)
        write_palette_png(voc / "SegmentationClass" / f"{example_id}.png", np.asarray(mask), voc_palette())
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    (lists / "val.txt").write_text(f"{ids[0]}\n")
    return ids


def plain_dataset(root, ids: Sequence[str], crop: int, batch: int):
    """The plain pipeline (see module doc), repeating forever.

    Returns:
        tf.data.Dataset of (float32 [batch, crop, crop, 3], int32 [batch, crop, crop]).
    """
    import tensorflow as tf

    voc = Path(root) / VOC_SUBDIR
    images = [str(voc / "JPEGImages" / f"{i}.jpg") for i in ids]
    masks = [str(voc / "SegmentationClass" / f"{i}.png") for i in ids]

    def load(image_path, mask_path):
        image = tf.cast(tf.io.decode_jpeg(tf.io.read_file(image_path), channels=3), tf.float32)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
        scale = tf.random.uniform([], *SCALE_RANGE)
        size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
        image = tf.image.resize(image, size, method="bilinear")
        mask = tf.image.resize(mask, size, method="nearest")
        padded = tf.maximum(size, crop)
        image = tf.image.pad_to_bounding_box(image, 0, 0, padded[0], padded[1])
        mask = tf.image.pad_to_bounding_box(mask, 0, 0, padded[0], padded[1])
        top = tf.random.uniform([], 0, padded[0] - crop + 1, tf.int32)
        left = tf.random.uniform([], 0, padded[1] - crop + 1, tf.int32)
        image = image[top:top + crop, left:left + crop]
        mask = mask[top:top + crop, left:left + crop]
        flip = tf.random.uniform([]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
        image.set_shape([crop, crop, 3])
        mask.set_shape([crop, crop, 1])
        return image, tf.cast(mask[..., 0], tf.int32)

    return tf.data.Dataset.from_tensor_slices((images, masks)).shuffle(len(images)).repeat() \
        .map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure(make_dataset: Callable, batch: int, warmup: int, batches: int) -> float:
    """img/s of a fresh iterator over ``batches`` batches, after ``warmup`` discarded ones."""
    iterator = iter(make_dataset())
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    rate = batches * batch / (time.perf_counter() - start)
    # Stops its background threads before the other pipeline is timed.
    del iterator
    return rate


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="data folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=10, help="batches discarded before timing")
    parser.add_argument("--batches", type=int, default=100, help="batches timed per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-jitter", action="store_true", help="ours without photometric jitter")
    args = parser.parse_args(argv)
    if args.num_images < args.batch:
        parser.error("--num-images must be at least --batch")

    with tempfile.TemporaryDirectory(prefix="bench_input_") as scratch:
        root = Path(args.root or scratch)
        return _run(root, args)


def _run(root: Path, args) -> int:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from exfuse_keras.config import config_from_dict
    from exfuse_keras.data.pipeline import make_dataset, prepare_builder
    from exfuse_keras.data.voc import read_id_list

    split_list = root / VOC_SUBDIR / "ImageSets" / "Segmentation" / "train.txt"
    start = time.perf_counter()
    ids = read_id_list(split_list) if split_list.is_file() else write_voc_like_data(root, args.num_images)
    print(f"data: {len(ids)} images of {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]} in {root} ({time.perf_counter() - start:.1f} s)")
    cfg = config_from_dict({
        "data": {"dataset": "voc", "root": str(root), "crop_size": args.crop, "scale_range": list(SCALE_RANGE),
                 "flip": True, "photometric_jitter": not args.no_jitter},
        "train": {"batch_size": args.batch}})
    tfds.disable_progress_bar()
    start = time.perf_counter()
    prepare_builder(cfg.data)
    print(f"ours: TFDS records prepared in {time.perf_counter() - start:.1f} s (not timed below)")
    print(f"crop {args.crop}, batch {args.batch}, warm-up {args.warmup} batches, {args.batches} timed batches, "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}")
    pipelines = {
        "plain": lambda: plain_dataset(root, ids, args.crop, args.batch),
        "ours": lambda: make_dataset(cfg, "train", training=True, repeat=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for round_number in range(args.rounds):
        order = list(pipelines) if round_number % 2 == 0 else list(reversed(pipelines))
        for name in order:
            rate = measure(pipelines[name], args.batch, args.warmup, args.batches)
            rates[name].append(rate)
            print(f"round {round_number + 1}: {name:5s} {rate:7.1f} img/s", flush=True)
    means = {name: float(np.mean(values)) for name, values in rates.items()}
    jitter = "off" if args.no_jitter else "on"
    print(f"plain tf.data (decode, scale, pad, crop, flip):        {means['plain']:7.1f} img/s")
    print(f"ours (make_dataset, all augmentation, jitter {jitter}):  {means['ours']:7.1f} img/s")
    print(f"ratio ours / plain: {means['ours'] / means['plain']:.2f} (target >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
