"""COCO 2017 mapped to the 20 PASCAL VOC classes (the paper's stage 1) as a tensorflow-datasets builder.

``CocoVocSegmentation`` (TFDS name ``coco_voc_segmentation``) writes records in the format of
every segmentation builder here (``voc.segmentation_features``), so the input pipeline reads
it like VOC: ``data.dataset: coco_voc``, or one entry of ``data.mix``.

Labels: the 20 COCO categories of ``COCO_TO_VOC`` become their VOC class index; every other
pixel is background (0), including COCO's other 60 thing and 53 stuff categories and the
panoptic "void" (id 0) pixels. A crowd region (``iscrowd``) of a VOC category becomes 255 (the
ignore label): its instances are not separated and it may hold background. A crowd of another
category stays background, which it is for the 20 classes.

Configs (``data.coco``): the source, and whether images with no pixel of a VOC class are kept
(``*_all``) or dropped (default; COCO's other images would add background only):

- ``panoptic`` / ``panoptic_all``: from TFDS's ``coco/2017_panoptic`` (prepared by TFDS in the
  same data_dir, downloading COCO's images and panoptic annotations): the panoptic PNG's segment
  ids (``R + 256 G + 256^2 B``) are looked up in the example's ``panoptic_objects``.
- ``instances`` / ``instances_all``: from the official instance annotations
  ``annotations/instances_{train,val}2017.json`` and the ``train2017/``, ``val2017/`` images in
  ``manual_dir`` (``data.root``), extracted or as the official zips (else downloaded).
  Segmentations are polygons (filled with PIL, which may differ from pycocotools by a pixel
  along an edge) or RLE, uncompressed (``counts`` a list) or compressed (``counts`` a string).
  Instances are painted largest first, so a smaller object in front of a larger one stays
  visible; crowd regions first, so a separated instance over a crowd keeps its class.

Splits: ``train`` (COCO train2017, 118,287 images before dropping) and ``val`` (val2017, 5,000).
Every image goes through exfuse_keras/data/checks.py (corrupt files stop preparation with one
line; grayscale and CMYK become RGB).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from exfuse_keras.config import VOC_CLASSES
from exfuse_keras.data.checks import DataError, files_fingerprint, read_image
from exfuse_keras.data.voc import VOC_IGNORE_LABEL, manual_dir_of, segmentation_info

__all__ = ["CocoVocSegmentation", "CocoVocConfig", "COCO_TO_VOC", "coco_builder_config", "voc_label_table",
           "panoptic_to_voc", "panoptic_voc_examples", "annotation_mask", "rle_counts_from_string",
           "instances_to_voc", "instances_voc_examples", "PANOPTIC_DATASET"]

# COCO category name -> VOC class name, for the 20 VOC classes (docs/data.md has the same table).
COCO_TO_VOC = {
    "airplane": "aeroplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat", "bottle": "bottle",
    "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
    "dining table": "diningtable", "dog": "dog", "horse": "horse", "motorcycle": "motorbike",
    "person": "person", "potted plant": "pottedplant", "sheep": "sheep", "couch": "sofa", "train": "train",
    "tv": "tvmonitor",
}
PANOPTIC_DATASET = "coco/2017_panoptic"
# TFDS split of coco/2017_panoptic, and the official file names, per split of this builder.
_PANOPTIC_SPLITS = {"train": "train", "val": "validation"}
_INSTANCE_SPLITS = {"train": "train2017", "val": "val2017"}
_ANNOTATIONS = ("annotations", "annotations_trainval2017.zip",
                "http://images.cocodataset.org/annotations/annotations_trainval2017.zip")


def voc_label_table(category_names, where) -> dict[str, int]:
    """Maps each COCO category name to its VOC class index (absent names are background).

    Args:
        category_names: the dataset's category names (TFDS label names or the JSON's).
        where: the source, for the message.

    Raises:
        DataError: a COCO name of ``COCO_TO_VOC`` is missing, i.e. not COCO's category list.
    """
    missing = sorted(set(COCO_TO_VOC) - set(category_names))
    if missing:
        raise DataError("labels", where, f"category names lack {', '.join(missing[:5])}; expected COCO's "
                        "categories (is this COCO 2017?)")
    return {coco: VOC_CLASSES.index(voc) for coco, voc in COCO_TO_VOC.items()}


def _has_voc_object(mask: np.ndarray) -> bool:
    return bool(((mask > 0) & (mask != VOC_IGNORE_LABEL)).any())


# ---------------------------------------------------------------------------------------------
# Panoptic source


def panoptic_to_voc(segment_map: np.ndarray, segment_ids, voc_classes, is_crowd, where) -> np.ndarray:
    """One panoptic annotation -> VOC class mask.

    Args:
        segment_map: uint32 [H, W] segment id per pixel (0 = void).
        segment_ids: int [N] ids of the example's segments.
        voc_classes: int [N] VOC class of each segment (0 for a non-VOC category).
        is_crowd: bool [N].
        where: the example, for messages.

    Returns:
        uint8 [H, W]: VOC classes, 0 for void and non-VOC segments, 255 for VOC crowds.

    Raises:
        DataError: the PNG holds a segment id that its segments list does not.
    """
    value_of = {int(segment): VOC_IGNORE_LABEL if crowd and voc_class > 0 else int(voc_class)
                for segment, voc_class, crowd in zip(segment_ids, voc_classes, is_crowd)}
    value_of[0] = 0
    present, inverse = np.unique(segment_map, return_inverse=True)
    unknown = [int(segment) for segment in present if int(segment) not in value_of]
    if unknown:
        raise DataError("labels", where, f"panoptic PNG has segment id(s) {', '.join(map(str, unknown[:5]))} "
                        "missing from its segments list")
    lookup = np.array([value_of[int(segment)] for segment in present], np.uint8)
    return lookup[inverse].reshape(segment_map.shape)


def _panoptic_segment_map(png: bytes, where) -> np.ndarray:
    """Decodes a panoptic PNG to uint32 [H, W] segment ids (R + 256 G + 256^2 B)."""
    rgb = read_image(where, content=png).pixels.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def panoptic_voc_examples(coco: tfds.core.DatasetBuilder, split: str,
                          drop_empty: bool) -> Iterator[tuple[str, dict]]:
    """Records of ``segmentation_features`` from a prepared ``coco/2017_panoptic`` builder.

    Args:
        coco: the prepared ``coco/2017_panoptic`` builder.
        split: its split (``train`` or ``validation``).
        drop_empty: skip images with no pixel of a VOC class.

    Yields:
        (key, {"image": encoded image or uint8 [H, W, 3], "mask": uint8 [H, W, 1], "file_name"}).

    Raises:
        DataError: a bad image or PNG, a mask whose size differs from its image, unknown ids.
    """
    names = coco.info.features["panoptic_objects"]["label"].names
    table = voc_label_table(names, f"{coco.name} label names")
    label_to_voc = np.array([table.get(name, 0) for name in names], np.int64)
    examples = coco.as_dataset(split=split, shuffle_files=False,
                               decoders={"image": tfds.decode.SkipDecoding(),
                                         "panoptic_image": tfds.decode.SkipDecoding()})
    for example in tfds.as_numpy(examples):
        file_name = example["image/filename"].decode()
        where = f"{coco.name}/{split}/{file_name}"
        objects = example["panoptic_objects"]
        mask = panoptic_to_voc(_panoptic_segment_map(example["panoptic_image"], f"{where} (panoptic PNG)"),
                               objects["id"], label_to_voc[objects["label"]], objects["is_crowd"], where)
        if drop_empty and not _has_voc_object(mask):
            continue
        image = read_image(where, content=example["image"])
        _check_size(image.pixels.shape[:2], mask.shape, where)
        yield file_name, _record(image, mask, file_name)


def _check_size(image_shape, mask_shape, where) -> None:
    if tuple(image_shape) != tuple(mask_shape):
        raise DataError("size_mismatch", where, f"annotation is {mask_shape[1]}x{mask_shape[0]} (WxH) but "
                        f"the image is {image_shape[1]}x{image_shape[0]}")


def _record(image, mask: np.ndarray, file_name: str) -> dict:
    return {"image": image.encoded if image.encoded is not None else image.pixels,
            "mask": mask[..., None], "file_name": os.path.splitext(file_name)[0]}


# ---------------------------------------------------------------------------------------------
# Instance annotations source


def rle_counts_from_string(counts: str) -> list[int]:
    """Decodes COCO's compressed RLE string (pycocotools' ``rleFrString``).

    Each count is a little-endian base-32 number in characters 48..111: 5 value bits per
    character, bit 0x20 = more characters follow, bit 0x10 of the last = negative. From the
    fourth count on, the value is a difference to the count two places back.
    """
    result: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            char = ord(counts[position]) - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(result) > 2:
            value += result[-2]
        result.append(value)
    return result


def annotation_mask(segmentation, height: int, width: int, where) -> np.ndarray:
    """Rasterises one COCO ``segmentation`` (polygons, or uncompressed / compressed RLE).

    Args:
        segmentation: a list of polygons ``[x1, y1, x2, y2, ...]`` (pixel coordinates), or
            ``{"size": [H, W], "counts": [...] | "..."}``: run lengths of the column-major
            (Fortran order) mask, alternating 0s and 1s, starting with 0s.
        height, width: the image's size.
        where: the annotation, for messages.

    Returns:
        bool [height, width].

    Raises:
        DataError: an RLE of another size, or whose counts do not cover the image.
    """
    if isinstance(segmentation, list):
        canvas = Image.new("1", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon in segmentation:
            # Fewer than 3 points enclose nothing (COCO has a few such polygons).
            if len(polygon) >= 6:
                draw.polygon([(polygon[k], polygon[k + 1]) for k in range(0, len(polygon) - 1, 2)], fill=1,
                             outline=1)
        return np.asarray(canvas, bool)
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise DataError("mask_format", where, "segmentation is neither polygons nor an RLE {size, counts}")
    if list(segmentation["size"]) != [height, width]:
        raise DataError("size_mismatch", where, f"RLE size {segmentation['size']} differs from the image's "
                        f"[{height}, {width}]")
    counts = segmentation["counts"]
    counts = rle_counts_from_string(counts) if isinstance(counts, str) else list(counts)
    if sum(counts) != height * width or min(counts, default=0) < 0:
        raise DataError("mask_format", where, f"RLE counts cover {sum(counts)} pixels, expected "
                        f"{height}x{width} = {height * width}")
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape(width, height).T


def instances_to_voc(annotations, height: int, width: int, table: dict[int, int], where) -> np.ndarray:
    """One image's instance annotations -> VOC class mask.

    Args:
        annotations: the image's COCO annotation dicts (``segmentation``, ``category_id``,
            ``iscrowd``, ``area``).
        height, width: the image's size.
        table: COCO category id -> VOC class index, for the 20 VOC categories only.
        where: the image, for messages.

    Returns:
        uint8 [height, width]: VOC classes, 255 on VOC crowds, 0 elsewhere.
    """
    mask = np.zeros((height, width), np.uint8)
    voc = [a for a in annotations if a["category_id"] in table]
    # Crowds first, then instances largest first: see the module doc.
    for annotation in sorted(voc, key=lambda a: (not a.get("iscrowd", 0), -a.get("area", 0.0))):
        pixels = annotation_mask(annotation["segmentation"], height, width,
                                 f"{where} (annotation {annotation.get('id')})")
        mask[pixels] = VOC_IGNORE_LABEL if annotation.get("iscrowd", 0) else table[annotation["category_id"]]
    return mask


def instances_voc_examples(annotation_path, image_dir, drop_empty: bool) -> Iterator[tuple[str, dict]]:
    """Records of ``segmentation_features`` from an instances JSON and its image folder.

    Args:
        annotation_path: ``instances_{train,val}2017.json``.
        image_dir: the folder of its images (``file_name`` of each image entry).
        drop_empty: skip images with no pixel of a VOC class.

    Yields:
        (key, record) as ``panoptic_voc_examples``, in image id order.

    Raises:
        DataError: a missing or unreadable JSON, a bad image, a size differing from the JSON's.
    """
    annotation_path, image_dir = Path(annotation_path), Path(image_dir)
    if not annotation_path.is_file():
        raise DataError("missing", annotation_path, "annotation file not found")
    try:
        with open(annotation_path, encoding="utf-8") as f:
            coco = json.load(f)
        categories = {c["id"]: c["name"] for c in coco["categories"]}
        images, annotations = coco["images"], coco["annotations"]
    except (ValueError, KeyError, TypeError) as err:
        raise DataError("corrupt", annotation_path, f"not a COCO instances file ({err!r})") from None
    by_name = voc_label_table(categories.values(), annotation_path)
    table = {cid: by_name[name] for cid, name in categories.items() if name in by_name}
    per_image = collections.defaultdict(list)
    for annotation in annotations:
        if annotation["category_id"] in table:
            per_image[annotation["image_id"]].append(annotation)
    for info in sorted(images, key=lambda i: i["id"]):
        voc = per_image.get(info["id"], [])
        # Cheap test first: an image without a separated VOC instance cannot have a VOC pixel.
        if drop_empty and all(a.get("iscrowd", 0) for a in voc):
            continue
        path = image_dir / info["file_name"]
        mask = instances_to_voc(voc, info["height"], info["width"], table, path)
        if drop_empty and not _has_voc_object(mask):
            continue
        image = read_image(path, listed_in=str(annotation_path))
        _check_size(image.pixels.shape[:2], mask.shape, path)
        yield info["file_name"], _record(image, mask, info["file_name"])


# ---------------------------------------------------------------------------------------------
# The builder


@dataclasses.dataclass
class CocoVocConfig(tfds.core.BuilderConfig):
    """A ``CocoVocSegmentation`` config: ``source`` (``panoptic``/``instances``) and ``drop_empty``."""

    source: str = "panoptic"
    drop_empty: bool = True


def coco_builder_config(source: str, drop_empty: bool) -> str:
    """The name of the config for ``data.coco.source`` and ``data.coco.drop_empty``."""
    return source if drop_empty else f"{source}_all"


def _locate(manual_dir: Optional[Path], folder: str, archive: str) -> Optional[Path]:
    """An extracted folder or an archive in ``manual_dir``; None when neither is there."""
    for candidate in (folder, archive):
        if manual_dir is not None and (manual_dir / candidate).exists():
            return manual_dir / candidate
    return None


class CocoVocSegmentation(tfds.core.GeneratorBasedBuilder):
    """COCO 2017 in the 21 VOC classes (see module doc)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        CocoVocConfig(name=coco_builder_config(source, drop_empty), source=source, drop_empty=drop_empty,
                      description=f"COCO 2017 from {source} annotations in VOC's classes; "
                                  f"{'images without a VOC object dropped' if drop_empty else 'all images'}.")
        for source in ("panoptic", "instances") for drop_empty in (True, False)
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Optional for the instances configs (otherwise downloaded): put in manual_dir (data.root) the
    official annotations_trainval2017.zip, train2017.zip and val2017.zip, or their extracted
    folders annotations/, train2017/, val2017/. The panoptic configs prepare TFDS's
    coco/2017_panoptic in the same data_dir (downloaded by TFDS).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return segmentation_info(self, __doc__.splitlines()[0], homepage="https://cocodataset.org/")

    def source_fingerprint(self, manual_dir) -> str:
        """Identifies the sources, so records built from other files are not reused.

        Args:
            manual_dir: ``data.root``, or None.
        """
        config = self.builder_config
        if config.source == "panoptic":
            return files_fingerprint([], extra=f"{config.name} {PANOPTIC_DATASET}")
        manual_dir = Path(manual_dir) if manual_dir is not None else None
        parts = [_locate(manual_dir, folder, f"{folder}.zip") for folder in _INSTANCE_SPLITS.values()]
        parts.append(_locate(manual_dir, *_ANNOTATIONS[:2]))
        if parts[-1] is not None and parts[-1].is_dir():
            parts[-1:] = [parts[-1] / f"instances_{name}.json" for name in _INSTANCE_SPLITS.values()]
        # Folders count by their modification time, which changes when files come or go.
        return files_fingerprint([p for p in parts if p is not None], extra=f"{config.name} {parts}")

    def _split_generators(self, dl_manager):
        config = self.builder_config
        manual_dir = manual_dir_of(dl_manager)
        self.info.metadata["source_fingerprint"] = self.source_fingerprint(manual_dir)
        if config.source == "panoptic":
            coco = tfds.builder(PANOPTIC_DATASET, data_dir=self.data_dir_root)
            coco.download_and_prepare()
            return {split: self._generate_examples(panoptic_voc_examples(coco, coco_split, config.drop_empty))
                    for split, coco_split in _PANOPTIC_SPLITS.items()}

        def part(folder, archive, url) -> Path:
            found = _locate(manual_dir, folder, archive)
            if found is not None and found.is_dir():
                return found
            return Path(dl_manager.extract(found) if found is not None else dl_manager.download_and_extract(url)) \
                / folder

        annotations = part(*_ANNOTATIONS)
        return {split: self._generate_examples(instances_voc_examples(
                    annotations / f"instances_{name}.json",
                    part(name, f"{name}.zip", f"http://images.cocodataset.org/zips/{name}.zip"), config.drop_empty))
                for split, name in _INSTANCE_SPLITS.items()}

    def _generate_examples(self, examples: Iterator[tuple[str, dict]]):
        """One split's (key, record) pairs, from ``panoptic_voc_examples`` or ``instances_voc_examples``."""
        yield from examples
