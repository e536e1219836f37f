"""PASCAL VOC 2012 segmentation (+ SBD "train_aug") as a tensorflow-datasets builder.

Configs of ``Voc2012Segmentation`` (TFDS name ``voc2012_segmentation``; TFDS's own ``voc`` has
detection labels only):

- ``voc``: VOC 2012 ``ImageSets/Segmentation`` train (1,464) and val (1,449).
- ``train_aug``: train = SBD train + SBD val + VOC train minus every VOC val image (10,582);
  val = VOC val (1,449). Where VOC train and SBD both annotate an image, VOC's finer mask
  (with its 255 borders) is used; other SBD images take their ``cls/<id>.mat`` mask.
- ``shapes``: the built-in dataset (exfuse_keras/data/shapes.py), which is written in the same
  VOCdevkit layout; it is read from ``manual_dir`` only (6 classes).

Sources, in order of preference, for each of VOC and SBD (``manual_dir`` is ``data.root``):
an extracted folder (``<manual_dir>/VOCdevkit/VOC2012``, ``<manual_dir>/benchmark_RELEASE/dataset``),
the official archive in ``manual_dir`` (``VOCtrainval_11-May-2012.tar``, ``benchmark.tgz``), or a
download through TFDS's download manager.

Records: ``image`` uint8 [H, W, 3] RGB (an RGB JPEG is stored as its own bytes, anything else
re-encoded losslessly as PNG after conversion to RGB), ``mask`` uint8 [H, W, 1] class indices
(palette indices of VOC's PNGs; 255 = void, kept), ``file_name`` the image id. Every example
goes through exfuse_keras/data/checks.py first, so preparation stops at the first bad file
with a one-line ``DataError`` instead of writing a wrong label.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import tensorflow_datasets as tfds

from exfuse_keras.data.checks import DataError, ExampleFiles, files_fingerprint, read_example
from exfuse_keras.data.scenes import SCENES_CLASSES
from exfuse_keras.data.shapes import SHAPES_CLASSES, VOC_SUBDIR

__all__ = ["Voc2012Segmentation", "VocSegmentationConfig", "voc_examples", "read_id_list",
           "segmentation_features", "segmentation_info", "example_record", "manual_dir_of", "VOC_SUBDIR", "SBD_SUBDIR"]

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
SBD_URL = ("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
           "benchmark.tgz")
VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"
SBD_ARCHIVE = "benchmark.tgz"
SBD_SUBDIR = Path("benchmark_RELEASE") / "dataset"
VOC_NUM_CLASSES = 21
VOC_IGNORE_LABEL = 255


def segmentation_features() -> tfds.features.FeaturesDict:
    """The record format shared by every segmentation builder of this project."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "mask": tfds.features.Image(shape=(None, None, 1)),
        "file_name": tfds.features.Text(),
    })


def segmentation_info(builder: tfds.core.DatasetBuilder, description: str,
                      homepage: Optional[str] = None) -> tfds.core.DatasetInfo:
    """The DatasetInfo every segmentation builder here shares (one record format for the pipeline).

    Its metadata holds "source_fingerprint" (see each builder's ``source_fingerprint``), so
    records are rebuilt when their source files change.
    """
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=segmentation_features(),
        supervised_keys=("image", "mask"),
        homepage=homepage,
        metadata=tfds.core.MetadataDict(),
    )


def example_record(files: ExampleFiles, num_classes: int, ignore_label: int, colours=None,
                   label_map=None, tally=None) -> dict:
    """Reads, checks and encodes one example for ``segmentation_features``.

    ``colours`` and ``label_map`` say how the mask is read (``checks.read_mask``); a
    ``checks.MaskTally`` given as ``tally`` counts its labels.

    Raises:
        DataError: see ``checks.read_example``.
    """
    image, mask = read_example(files, num_classes, ignore_label, colours, label_map)
    if tally is not None:
        tally.add(files.mask_path, mask)
    return {
        "image": image.encoded if image.encoded is not None else image.pixels,
        "mask": mask[..., None],
        "file_name": files.example_id,
    }


def read_id_list(path) -> list[str]:
    """Reads a split list (one id per line; VOC's ImageSets format).

    Raises:
        DataError: the list file is missing, or an id names a folder (``../x``, ``/etc/x``,
            ``sub/x``): ids are file names, so no list can reach files outside the dataset.
    """
    if not os.path.isfile(path):
        raise DataError("missing", path, "split list not found")
    with open(path, encoding="utf-8") as f:
        # VOC's Main/ lists carry a second column (+1/-1); segmentation lists do not, but
        # taking the first field reads both.
        ids = [(number, line.split()[0]) for number, line in enumerate(f, 1) if line.strip()]
    for number, example_id in ids:
        parts = example_id.replace("\\", "/").split("/")
        if len(parts) > 1 or example_id in (".", ".."):
            outside = os.path.isabs(example_id) or ".." in parts
            raise DataError("outside", path, f"line {number}: id {example_id!r} "
                            f"{'points outside the dataset folder' if outside else 'names a folder'}; "
                            f"expected a file name without folders or extension")
    return [example_id for _, example_id in ids]


def voc_examples(voc_dir, sbd_dir=None, source: str = "voc") -> dict[str, list[ExampleFiles]]:
    """Lists the examples of each split, without opening any image.

    Args:
        voc_dir: the ``VOCdevkit/VOC2012`` folder (or the shapes dataset's).
        sbd_dir: SBD's ``benchmark_RELEASE/dataset`` folder; needed for ``train_aug`` only.
        source: ``voc``, ``shapes`` or ``scenes`` (same layout), or ``train_aug``.

    Returns:
        ``{"train": [...], "val": [...]}``, each sorted by id.

    Raises:
        DataError: a split list is missing.
    """
    voc_dir = Path(voc_dir)
    lists = voc_dir / "ImageSets" / "Segmentation"

    def voc_example(example_id, listed_in):
        return ExampleFiles(example_id, str(voc_dir / "JPEGImages" / f"{example_id}.jpg"),
                            str(voc_dir / "SegmentationClass" / f"{example_id}.png"), str(listed_in))

    voc_split = {split: read_id_list(lists / f"{split}.txt") for split in ("train", "val")}
    val = [voc_example(i, lists / "val.txt") for i in sorted(set(voc_split["val"]))]
    if source in ("voc", "shapes", "scenes"):
        return {"train": [voc_example(i, lists / "train.txt") for i in sorted(set(voc_split["train"]))],
                "val": val}
    if source != "train_aug":
        raise ValueError(f"unknown source {source!r}; expected 'voc', 'shapes', 'scenes' or 'train_aug'")
    if sbd_dir is None:
        raise ValueError("train_aug needs the SBD folder (benchmark_RELEASE/dataset)")

    sbd_dir = Path(sbd_dir)
    sbd_listed_in = {}
    for split in ("train", "val"):
        for example_id in read_id_list(sbd_dir / f"{split}.txt"):
            sbd_listed_in[example_id] = sbd_dir / f"{split}.txt"
    voc_train = set(voc_split["train"])
    excluded = set(voc_split["val"])
    train = []
    for example_id in sorted((set(sbd_listed_in) | voc_train) - excluded):
        if example_id in voc_train:
            train.append(voc_example(example_id, lists / "train.txt"))
            continue
        # SBD's images are VOC images; VOC's copy is used when it exists so both parts of the
        # set come from the same files.
        image = voc_dir / "JPEGImages" / f"{example_id}.jpg"
        if not image.is_file():
            image = sbd_dir / "img" / f"{example_id}.jpg"
        train.append(ExampleFiles(example_id, str(image), str(sbd_dir / "cls" / f"{example_id}.mat"),
                                  str(sbd_listed_in[example_id])))
    return {"train": train, "val": val}


@dataclasses.dataclass
class VocSegmentationConfig(tfds.core.BuilderConfig):
    """A ``Voc2012Segmentation`` config.

    Attributes:
        source: which examples (``voc``, ``train_aug``, ``shapes``, ``scenes``; see ``voc_examples``).
        num_classes: labels must lie in ``[0, num_classes)`` or be 255.
        downloadable: whether the sources may be downloaded when ``manual_dir`` lacks them.
    """

    source: str = "voc"
    num_classes: int = VOC_NUM_CLASSES
    downloadable: bool = True


def manual_dir_of(dl_manager) -> Optional[Path]:
    """``dl_manager.manual_dir``, or None when none was given or it is empty."""
    try:
        return Path(dl_manager.manual_dir)
    except AssertionError:
        return None


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
    """PASCAL VOC 2012 semantic segmentation, optionally augmented with SBD (see module doc)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        VocSegmentationConfig(name="voc", source="voc",
                              description="VOC 2012 segmentation: train 1,464, val 1,449."),
        VocSegmentationConfig(name="train_aug", source="train_aug",
                              description="SBD train+val + VOC train minus VOC val (10,582); val 1,449."),
        VocSegmentationConfig(name="shapes", source="shapes", num_classes=len(SHAPES_CLASSES),
                              downloadable=False,
                              description="The built-in shapes dataset (VOCdevkit layout), from manual_dir."),
        VocSegmentationConfig(name="scenes", source="scenes", num_classes=len(SCENES_CLASSES),
                              downloadable=False,
                              description="The built-in scenes benchmark (VOCdevkit layout), from manual_dir."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Optional (otherwise the archives are downloaded). Put in manual_dir (data.root) either the
    official archives {VOC_ARCHIVE} (and, for train_aug, SBD's {SBD_ARCHIVE}) or their extracted
    folders {VOC_SUBDIR} and {SBD_SUBDIR}. The shapes and scenes configs read {VOC_SUBDIR} written by
    `python -m exfuse_keras.data.shapes --root <manual_dir>` (or `exfuse_keras.data.scenes`).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return segmentation_info(self, __doc__.splitlines()[0], homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/")

    def _locate(self, manual_dir: Optional[Path], subdir: Path, archive: str) -> tuple[str, Optional[Path]]:
        """Where one source is: ("folder", path), ("archive", path) or ("download", None)."""
        if manual_dir is not None and (manual_dir / subdir).is_dir():
            return "folder", manual_dir / subdir
        if manual_dir is not None and (manual_dir / archive).is_file():
            return "archive", manual_dir / archive
        if not self.builder_config.downloadable:
            raise DataError("missing", manual_dir / subdir if manual_dir else subdir,
                            "folder not found; generate it with "
                            f"`python -m exfuse_keras.data.{self.builder_config.source} --root <data.root>`")
        return "download", None

    def _needs_sbd(self) -> bool:
        return self.builder_config.source == "train_aug"

    def source_fingerprint(self, manual_dir) -> str:
        """Identifies the source files, so records built from other files are not reused.

        Args:
            manual_dir: ``data.root``, or None.

        Returns:
            A hash of the listed files' names, sizes and times for extracted folders, of the
            archives for archives, or of the URLs for downloads.
        """
        manual_dir = Path(manual_dir) if manual_dir is not None and Path(manual_dir).is_dir() else None
        located = [self._locate(manual_dir, VOC_SUBDIR, VOC_ARCHIVE)]
        if self._needs_sbd():
            located.append(self._locate(manual_dir, SBD_SUBDIR, SBD_ARCHIVE))
        if all(kind == "folder" for kind, _ in located):
            splits = voc_examples(*(path for _, path in located), source=self.builder_config.source)
            paths = [p for examples in splits.values() for f in examples for p in (f.image_path, f.mask_path)]
            return files_fingerprint(paths + sorted({f.listed_in for e in splits.values() for f in e}),
                                     extra=self.builder_config.source)
        return files_fingerprint([path for kind, path in located if kind != "download"],
                                 extra=f"{self.builder_config.source} {located}")

    def _extracted(self, dl_manager, manual_dir: Optional[Path], subdir: Path, archive: str, url: str) -> Path:
        kind, path = self._locate(manual_dir, subdir, archive)
        if kind == "folder":
            return path
        if kind == "archive":
            return Path(dl_manager.extract(path)) / subdir
        return Path(dl_manager.download_and_extract(url)) / subdir

    def _split_generators(self, dl_manager):
        manual_dir = manual_dir_of(dl_manager)
        voc_dir = self._extracted(dl_manager, manual_dir, VOC_SUBDIR, VOC_ARCHIVE, VOC_URL)
        sbd_dir = None
        if self._needs_sbd():
            sbd_dir = self._extracted(dl_manager, manual_dir, SBD_SUBDIR, SBD_ARCHIVE, SBD_URL)
        self.info.metadata["source_fingerprint"] = self.source_fingerprint(manual_dir)
        splits = voc_examples(voc_dir, sbd_dir, self.builder_config.source)
        return {split: self._generate_examples(examples) for split, examples in splits.items()}

    def _generate_examples(self, examples):
        for files in examples:
            yield files.example_id, example_record(files, self.builder_config.num_classes, VOC_IGNORE_LABEL)
