"""Sizing a run by its data: ``data.crop_size: auto`` and ``train.steps_per_epoch: auto``.

A recipe written before the data are seen (``configs/own_data.yaml``) cannot know how many
images a user has or how large they are. ``auto`` asks train.py to measure both before the first
step and to write the numbers it chose into the run's ``config.yaml`` (so a resumed run, an
evaluation or an export reads the same values):

- ``train.steps_per_epoch: auto``: one pass over the train split per epoch,
  ``ceil(train images / train.batch_size)`` (a mix counts each dataset by its weight). With
  ``train.epochs`` the number of passes, the budget follows the dataset's size.
- ``data.crop_size: auto`` (folder datasets): the median shorter side of the train images,
  rounded down to a multiple of 32 (the output stride) and kept within [64, 512]. Crops larger
  than most images would be mostly padding; 512 is the paper's crop.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from exfuse_keras.config import OUTPUT_STRIDE, Config, ConfigError

AUTO_CROP_RANGE = (64, 512)
MAX_SIZED_IMAGES = 2000  # at most this many headers are read, evenly spaced over the train list


def auto_crop_size(shorter_sides) -> int:
    """The crop for images whose shorter sides are ``shorter_sides`` (module doc)."""
    sides = np.asarray(list(shorter_sides), np.float64)
    if sides.size == 0:
        raise ValueError("no images to size the crop by")
    crop = int(np.median(sides)) // OUTPUT_STRIDE * OUTPUT_STRIDE
    return int(min(max(crop, AUTO_CROP_RANGE[0]), AUTO_CROP_RANGE[1]))


def train_image_sides(data, progress: bool = True) -> list[int]:
    """The shorter side of (up to ``MAX_SIZED_IMAGES`` of) a folder dataset's train images, read
    from their headers (no pixel is decoded)."""
    from PIL import Image

    from exfuse_keras.data.checks import DataError
    from exfuse_keras.data.folder import folder_examples
    from exfuse_keras.data.progress import bar_disable

    f = data.folder
    examples = folder_examples(data.root, f.image_dir, f.mask_dir, f.train_list, f.val_list, f.val_fraction,
                               f.split_seed, f.test_list)["train"]
    if len(examples) > MAX_SIZED_IMAGES:
        picks = np.linspace(0, len(examples) - 1, MAX_SIZED_IMAGES).round().astype(int)
        examples = [examples[i] for i in picks]
    from tqdm import tqdm

    sides = []
    for example in tqdm(examples, desc="sizing the crop", unit="image", disable=bar_disable(progress)):
        try:
            with Image.open(example.image_path) as image:
                sides.append(min(image.size))
        except (OSError, ValueError) as err:
            raise DataError("corrupt", example.image_path, f"cannot read its size ({err})") from None
    return sides


def resolve_auto_sizes(cfg: Config, progress: bool = True) -> tuple[Config, list[str]]:
    """``cfg`` with every ``auto`` size replaced by the number its data give, and one line per
    value chosen (for train.py's start report). A config without ``auto`` comes back as it is.

    Raises:
        ConfigError: ``data.crop_size: auto`` on a dataset that is not a folder dataset.
        DataError: an image whose header cannot be read.
    """
    data, train = cfg.data, cfg.train
    notes = []
    if data.crop_size == "auto":
        if data.dataset != "folder" or data.mix:
            raise ConfigError(f"data.crop_size: auto sizes the crop by a folder dataset's images; "
                              f"dataset {data.dataset!r}{' (a mix)' if data.mix else ''} needs a number, "
                              f"e.g. data.crop_size=512")
        sides = train_image_sides(data, progress)
        crop = auto_crop_size(sides)
        data = dataclasses.replace(data, crop_size=crop)
        notes.append(f"data.crop_size: auto -> {crop} (median shorter side {int(np.median(sides))} px over "
                     f"{len(sides):,} train images, in multiples of {OUTPUT_STRIDE} within "
                     f"{AUTO_CROP_RANGE[0]}..{AUTO_CROP_RANGE[1]})")
    if train.steps_per_epoch == "auto":
        from exfuse_keras.data.pipeline import num_examples

        count = num_examples(data, "train")
        steps = max(1, math.ceil(count / train.batch_size))
        train = dataclasses.replace(train, steps_per_epoch=steps)
        notes.append(f"train.steps_per_epoch: auto -> {steps:,} (one pass over {count:,} train images in "
                     f"batches of {train.batch_size}; {train.epochs} epochs = {train.epochs * steps:,} steps)")
    if not notes:
        return cfg, notes
    return dataclasses.replace(cfg, data=data, train=train), notes
