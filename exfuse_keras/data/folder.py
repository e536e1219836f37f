"""A user's own segmentation data (``data.dataset: folder``) as a tensorflow-datasets builder.

Layout under ``data.root`` (names set in ``data.folder``, see ``FolderConfig``)::

    images/<id>.jpg|.jpeg|.png|.bmp|.tif|.tiff|.webp
    masks/<id>.png      palette PNG (indices = classes) or single-channel 8-bit PNG
    train.txt, val.txt  optional split lists, one id per line

Without split lists a seeded random ``val_fraction`` of the images is held out. Class names and
the palette come from the config (``data.class_names``, ``data.palette``); labels must lie in
``[0, data.num_classes)`` or equal ``data.ignore_label``. The records have the same format as
``Voc2012Segmentation``'s and pass the same checks (exfuse_keras/data/checks.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from exfuse_keras.config import DataConfig
from exfuse_keras.data.checks import DataError, ExampleFiles, files_fingerprint
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
                    val_fraction: float = 0.1, split_seed: int = 0) -> dict[str, list[ExampleFiles]]:
    """Lists the train and val examples of a folder dataset, without opening any image.

    Args:
        root: the dataset folder (``data.root``); the other paths are relative to it.
        image_dir: folder of images, named ``<id>.<ext>``.
        mask_dir: folder of masks, named ``<id>.png``.
        train_list, val_list: split lists (ids, one per line), both or neither.
        val_fraction: without lists, the fraction of images held out for val (at least one).
        split_seed: without lists, the seed of the random hold-out.

    Returns:
        ``{"train": [...], "val": [...]}``. An id listed without an image gets the image path
        ``<image_dir>/<id>.*``, which reading then reports as missing.

    Raises:
        DataError: the image folder or a split list is missing, two images share an id, an id
        is in both split lists, or there are fewer than two images to split.
    """
    root = Path(root)
    images = _find_images(root / image_dir)

    def example(example_id, listed_in):
        image = images.get(example_id, root / image_dir / f"{example_id}.*")
        return ExampleFiles(example_id, str(image), str(root / mask_dir / f"{example_id}.png"), str(listed_in))

    if train_list is not None and val_list is not None:
        split_ids = {"train": read_id_list(root / train_list), "val": read_id_list(root / val_list)}
        both = sorted(set(split_ids["train"]) & set(split_ids["val"]))
        if both:
            raise DataError("duplicate", root / val_list, f"ids also in {train_list}: {', '.join(both[:5])}"
                            + (", ..." if len(both) > 5 else ""))
        lists = {"train": root / train_list, "val": root / val_list}
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
    val_fraction: float = 0.1
    split_seed: int = 0
    num_classes: int = 2
    ignore_label: int = 255

    def examples(self) -> dict[str, list[ExampleFiles]]:
        return folder_examples(self.root, self.image_dir, self.mask_dir, self.train_list, self.val_list,
                               self.val_fraction, self.split_seed)


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
                    if f.name not in _BASE_CONFIG_FIELDS}
        return files_fingerprint(paths + lists, extra=repr(sorted(settings.items())))

    def _split_generators(self, dl_manager):
        self.info.metadata["source_fingerprint"] = self.source_fingerprint()
        return {split: self._generate_examples(examples)
                for split, examples in self.builder_config.examples().items()}

    def _generate_examples(self, examples):
        config = self.builder_config
        for files in examples:
            yield files.example_id, example_record(files, config.num_classes, config.ignore_label)


def folder_builder(data: DataConfig, data_dir: str) -> FolderSegmentation:
    """The (not yet prepared) builder for ``data.dataset: folder``.

    Args:
        data: the data section; ``root``, ``folder``, ``num_classes``, ``ignore_label`` are read.
        data_dir: where TFDS keeps the prepared records.
    """
    folder = data.folder
    config = FolderSegmentationConfig(
        name="default", description=f"Folder dataset at {data.root}",
        root=str(Path(data.root).resolve()), image_dir=folder.image_dir, mask_dir=folder.mask_dir,
        train_list=folder.train_list, val_list=folder.val_list, val_fraction=folder.val_fraction,
        split_seed=folder.split_seed, num_classes=data.num_classes, ignore_label=data.ignore_label)
    return FolderSegmentation(config=config, data_dir=data_dir)
