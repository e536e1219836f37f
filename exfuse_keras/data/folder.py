"""A user's own segmentation data (``data.dataset: folder``) as a tensorflow-datasets builder.

Layout under ``data.root`` (names set in ``data.folder``, see ``FolderConfig``)::

    images/<id>.jpg|.jpeg|.png|.bmp|.tif|.tiff|.webp
    masks/<id>.png      palette PNG (indices = classes) or single-channel 8-bit PNG
    train.txt, val.txt  optional split lists, one id per line (test.txt too, for a test split)

Without split lists a seeded random ``val_fraction`` of the images is held out. Class names and
the palette come from the config (``data.class_names``, ``data.palette``); masks are read as
``data.mask_format`` and ``data.label_map`` say, and labels must then lie in
``[0, data.num_classes)`` or equal ``data.ignore_label``. The records have the same format as
``Voc2012Segmentation``'s and pass the same checks (exfuse_keras/data/checks.py). Preparing
the train split refuses masks that hold only 0 and the ignore label (black-and-white masks
without a ``label_map``) and names the classes no train mask holds.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from exfuse_keras.config import DataConfig
from exfuse_keras.data.checks import DataError, ExampleFiles, MaskTally, files_fingerprint, mask_colours
from exfuse_keras.data.palette import voc_palette
from exfuse_keras.data.voc import example_record, read_id_list, segmentation_info

__all__ = ["FolderSegmentation", "FolderSegmentationConfig", "folder_examples", "folder_builder",
           "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_BASE_CONFIG_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}


def _find_images(image_dir: Path) -> dict[str, Path]:
    """Maps each id (file stem) to its image; two images with one id raise DataError."""
    if not image_dir.is_dir():
        raise DataError("missing", image_dir, "image folder not found")
    images: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
            if path.stem in images:
                raise DataError("duplicate", path, f"two images have the id {path.stem!r} "
                                f"({images[path.stem].name} and {path.name}); ids must be unique")
            images[path.stem] = path
    return images


def folder_examples(root, image_dir: str = "images", mask_dir: str = "masks",
                    train_list: Optional[str] = None, val_list: Optional[str] = None,
                    val_fraction: float = 0.1, split_seed: int = 0,
                    test_list: Optional[str] = None) -> dict[str, list[ExampleFiles]]:
    """Lists the train and val examples of a folder dataset, without opening any image.

    Args:
        root: the dataset folder (``data.root``); the other paths are relative to it.
        image_dir: folder of images, named ``<id>.<ext>``.
        mask_dir: folder of masks, named ``<id>.png``.
        train_list, val_list: split lists (ids, one per line), both or neither.
        val_fraction: without lists, the fraction of images held out for val (at least one).
        split_seed: without lists, the seed of the random hold-out.
        test_list: with the two lists, a third: the test split.

    Returns:
        ``{"train": [...], "val": [...]}`` (and ``"test"`` with ``test_list``). An id listed without an image gets the image path
        ``<image_dir>/<id>.*``, which reading then reports as missing.

    Raises:
        DataError: the image folder or a split list is missing, two images share an id, an id
        is in two split lists, or there are fewer than two images to split.
    """
    root = Path(root)
    images = _find_images(root / image_dir)

    def example(example_id, listed_in):
        image = images.get(example_id, root / image_dir / f"{example_id}.*")
        return ExampleFiles(example_id, str(image), str(root / mask_dir / f"{example_id}.png"), str(listed_in))

    if train_list is not None and val_list is not None:
        names = {"train": train_list, "val": val_list, **({"test": test_list} if test_list is not None else {})}
        split_ids = {split: read_id_list(root / name) for split, name in names.items()}
        splits = list(names)
        for i, later in enumerate(splits):
            for earlier in splits[:i]:
                both = sorted(set(split_ids[earlier]) & set(split_ids[later]))
                if both:
                    raise DataError("duplicate", root / names[later], f"ids also in {names[earlier]}: "
                                    f"{', '.join(both[:5])}" + (", ..." if len(both) > 5 else ""))
        lists = {split: root / name for split, name in names.items()}
        return {split: [example(i, lists[split]) for i in sorted(set(ids))] for split, ids in split_ids.items()}

    ids = sorted(images)
    if len(ids) < 2:
        raise DataError("missing", root / image_dir, f"{len(ids)} image(s); need at least 2 to split "
                        "into train and val")
    order = np.random.default_rng(split_seed).permutation(len(ids))
    num_val = min(max(1, round(val_fraction * len(ids))), len(ids) - 1)
    val_ids = {ids[k] for k in order[:num_val]}
    listed_in = root / image_dir
    return {"train": [example(i, listed_in) for i in ids if i not in val_ids],
            "val": [example(i, listed_in) for i in ids if i in val_ids]}


@dataclasses.dataclass
class FolderSegmentationConfig(tfds.core.BuilderConfig):
    """Where a folder dataset lives and how it is split (see ``folder_examples``)."""

    root: str = ""
    image_dir: str = "images"
    mask_dir: str = "masks"
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    test_list: Optional[str] = None
    val_fraction: float = 0.1
    split_seed: int = 0
    num_classes: int = 2
    ignore_label: int = 255
    mask_format: str = "index"
    palette: Optional[tuple] = None       # ((r, g, b), ...): the classes' colours, for mask_format rgb
    label_map: tuple = ()                  # ((value, label), ...)
    class_names: tuple = ()

    def mask_reading(self) -> dict:
        """``checks.read_mask``'s ``colours`` and ``label_map``."""
        colours = mask_colours(self.palette, self.num_classes, self.ignore_label) if self.mask_format == "rgb" else None
        return {"colours": colours, "label_map": dict(self.label_map) or None}

    def examples(self) -> dict[str, list[ExampleFiles]]:
        return folder_examples(self.root, self.image_dir, self.mask_dir, self.train_list, self.val_list,
                               self.val_fraction, self.split_seed, self.test_list)


class FolderSegmentation(tfds.core.GeneratorBasedBuilder):
    """A folder of images and a folder of masks (see module doc); build with ``folder_builder``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return segmentation_info(self, __doc__.splitlines()[0])

    def source_fingerprint(self, manual_dir=None) -> str:
        """A hash of the listed files and of the settings, so changed data is rebuilt.

        Args:
            manual_dir: unused (the folder is in the config); there for the pipeline's
                builder-independent call.
        """
        config = self.builder_config
        splits = config.examples()
        paths = [p for examples in splits.values() for f in examples for p in (f.image_path, f.mask_path)]
        lists = sorted({f.listed_in for examples in splits.values() for f in examples})
        settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(FolderSegmentationConfig)
                    if f.name not in _BASE_CONFIG_FIELDS and f.name != "class_names"}  # names: messages only
        return files_fingerprint(paths + lists, extra=repr(sorted(settings.items())))

    def _split_generators(self, dl_manager):
        self.info.metadata["source_fingerprint"] = self.source_fingerprint()
        return {split: self._generate_examples(examples, split)
                for split, examples in self.builder_config.examples().items()}

    def _generate_examples(self, examples, split: str = "train"):
        config = self.builder_config
        tally = MaskTally(config.num_classes, config.ignore_label)
        for files in examples:
            yield files.example_id, example_record(files, config.num_classes, config.ignore_label,
                                                   tally=tally, **config.mask_reading())
        if split != "train":
            return
        trap = tally.binary_trap()
        if trap is not None:
            raise trap
        if tally.absent():
            print(f"warning: {config.root}: no train mask holds class(es) {tally.absent_names(config.class_names)}; "
                  "check data.num_classes, data.label_map and the masks", file=sys.stderr)


def folder_builder(data: DataConfig, data_dir: str) -> FolderSegmentation:
    """The (not yet prepared) builder for ``data.dataset: folder``.

    Args:
        data: the data section; ``root``, ``folder``, ``num_classes``, ``ignore_label``,
            ``mask_format``, ``palette``, ``label_map`` and ``class_names`` are read.
        data_dir: where TFDS keeps the prepared records.
    """
    folder = data.folder
    config = FolderSegmentationConfig(
        name="default", description=f"Folder dataset at {data.root}",
        root=str(Path(data.root).resolve()), image_dir=folder.image_dir, mask_dir=folder.mask_dir,
        train_list=folder.train_list, val_list=folder.val_list, test_list=folder.test_list,
        val_fraction=folder.val_fraction,
        split_seed=folder.split_seed, num_classes=data.num_classes, ignore_label=data.ignore_label,
        mask_format=data.mask_format, label_map=tuple(sorted(data.label_map.items())),
        palette=tuple(tuple(c) for c in (data.palette or voc_palette(data.num_classes).tolist())),
        class_names=tuple(data.class_names))
    return FolderSegmentation(config=config, data_dir=data_dir)
