"""What the built-in procedural datasets (``shapes``, ``scenes``) share: the PASCAL VOC layout
they are written in, a deterministic writer, and the per-pixel lookup-table baseline that shows
local appearance does not give their classes away.

Layout written under ``root``:

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png   (palette PNG, VOC colours)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
    <name>_meta.json                               (written last: its presence vouches for the rest)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Callable, Sequence

import numpy as np
from PIL import Image

from exfuse_keras.data.palette import voc_palette, write_palette_png

VOC_SUBDIR = Path("VOCdevkit") / "VOC2012"
SPLIT_CODES = {"train": 0, "val": 1}

# render(rng, size) -> (image uint8 [size, size, 3], mask uint8 [size, size])
Renderer = Callable[[np.random.Generator, int], tuple]


def voc_dirs(root):
    """(JPEGImages, SegmentationClass, ImageSets/Segmentation) folders under ``root``."""
    voc = Path(root) / VOC_SUBDIR
    return voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation"


def read_ids(root, split):
    return (voc_dirs(root)[2] / f"{split}.txt").read_text().split()


def write_synthetic_dataset(root, render: Renderer, classes: Sequence[str], meta_filename: str,
                            generator_version: int, num_train: int, num_val: int, size: int, seed: int,
                            jpeg_quality: int = 95, verbose: bool = True, label: str = "dataset",
                            variant: Optional[dict] = None) -> dict:
    """Renders and writes a dataset in the VOC layout, or reuses the one already there.

    Image k of a split is rendered from ``np.random.default_rng([seed, split_code, k])``, so it
    does not depend on how many images are generated. When ``root/<meta_filename>`` records the
    same arguments and generator version the dataset is reused untouched.

    Args:
        root (str | Path): output directory.
        render (Renderer): ``render(rng, size) -> (image, mask)``.
        classes (Sequence[str]): class names; mask values are their indices.
        meta_filename (str): the meta file's name, written last.
        generator_version (int): bumped whenever ``render`` changes, so old datasets regenerate.
        num_train (int), num_val (int): images per split.
        size (int): image side in pixels.
        seed (int): base random seed.
        jpeg_quality (int): JPEG quality of the images.
        verbose (bool): print a progress line every 200 images.
        label (str): the dataset's name in progress lines.
        variant (dict | None): generator options ``render`` was bound to, recorded in the meta
            file's args (so a dataset of other options is regenerated); only those that differ
            from the default, so a default dataset's meta file stays valid.

    Returns:
        The meta dict: generator_version, args, classes, and per split the class pixel counts,
        class balance (pixel fractions) and image counts (images holding each class).
    """
    root = Path(root)
    args = {"num_train": int(num_train), "num_val": int(num_val), "size": int(size),
            "seed": int(seed), "jpeg_quality": int(jpeg_quality), **(variant or {})}
    meta_path = root / meta_filename
    jpeg_dir, mask_dir, sets_dir = voc_dirs(root)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        lists_exist = all((sets_dir / f"{s}.txt").exists() for s in SPLIT_CODES)
        if meta.get("generator_version") == generator_version and meta.get("args") == args and lists_exist:
            return meta
        # Removed before overwriting so an interrupted run never leaves a meta file vouching
        # for half-rewritten images.
        meta_path.unlink()

    for d in (jpeg_dir, mask_dir, sets_dir):
        d.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    pixel_counts, image_counts = {}, {}
    done, total, start = 0, args["num_train"] + args["num_val"], time.time()
    for split, count in (("train", args["num_train"]), ("val", args["num_val"])):
        pixels = np.zeros(len(classes), dtype=np.int64)
        images = np.zeros(len(classes), dtype=np.int64)
        ids = [f"{split}_{k:05d}" for k in range(count)]
        for k, image_id in enumerate(ids):
            rng = np.random.default_rng([args["seed"], SPLIT_CODES[split], k])
            image, mask = render(rng, args["size"])
            Image.fromarray(image).save(jpeg_dir / f"{image_id}.jpg", quality=args["jpeg_quality"])
            write_palette_png(mask_dir / f"{image_id}.png", mask, palette)
            present = np.bincount(mask[mask < len(classes)].ravel(), minlength=len(classes))
            pixels += present
            images += present > 0
            done += 1
            if verbose and (done % 200 == 0 or done == total):
                elapsed = time.time() - start
                print(f"{label}: {done}/{total} images ({elapsed:.1f}s, "
                      f"ETA {elapsed / done * (total - done):.0f}s)", flush=True)
        (sets_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        pixel_counts[split], image_counts[split] = pixels, images

    meta = {
        "generator_version": generator_version,
        "args": args,
        "classes": list(classes),
        "class_pixel_counts": {s: c.tolist() for s, c in pixel_counts.items()},
        "class_balance": {s: (c / max(c.sum(), 1)).tolist() for s, c in pixel_counts.items()},
        "class_image_counts": {s: c.tolist() for s, c in image_counts.items()},
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def keeps_earlier_visible(instances: np.ndarray, areas: Sequence[int], region: np.ndarray,
                          min_visible: float) -> bool:
    """Whether painting ``region`` leaves every earlier object (``instances == j``, ``areas[j]``
    pixels when drawn) at least ``min_visible`` of its pixels: occlusion that keeps objects
    recognisable."""
    return bool(region.any()) and all(np.count_nonzero((instances == j) & ~region) >= min_visible * area
                                      for j, area in enumerate(areas))


def paint_contrasting(rng: np.random.Generator, image: np.ndarray, region: np.ndarray,
                      sample_texture: Callable[[], np.ndarray], min_contrast: float, tries: int) -> None:
    """Paints ``region`` of ``image`` (float [S, S, 3], in place) with a texture whose mean colour
    there differs from what it covers by at least ``min_contrast`` (RGB distance), so the
    region's outline is visible; after ``tries`` samples the last one is used."""
    covered = image[region].mean(axis=0)
    for _ in range(tries):
        texture = sample_texture()
        if np.linalg.norm(texture[region].mean(axis=0) - covered) >= min_contrast:
            break
    image[region] = texture[region]


def load_pairs(root, split):
    """Yields (image uint8 [H, W, 3], mask uint8 [H, W]) as stored on disk."""
    jpeg_dir, mask_dir, _ = voc_dirs(root)
    for image_id in read_ids(root, split):
        image = np.asarray(Image.open(jpeg_dir / f"{image_id}.jpg").convert("RGB"))
        # Palette PNGs decode to their indices, i.e. the class ids.
        mask = np.asarray(Image.open(mask_dir / f"{image_id}.png"))
        yield image, mask


def colour_bins(image):
    """Quantises RGB to 16 levels per channel: bin index in 0..4095."""
    q = image.astype(np.int64) >> 4
    return (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2]


def miou(confusion):
    """Mean IoU over classes present in the ground truth or the prediction."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    valid = union > 0
    return float(np.mean(tp[valid] / union[valid]))


def lookup_table_baseline(root, num_classes: int, features: Callable[[np.ndarray], np.ndarray],
                          num_bins: int) -> float:
    """Val mIoU of the best per-pixel lookup table from a local feature bin to a class.

    The table is fitted on the train split (majority class per bin) and scored on val, both
    read back from the JPEGs the models see. Bins never seen in training predict class 0.

    Args:
        root: dataset root in the VOC layout.
        num_classes (int): labels in [0, num_classes); others are ignored.
        features: ``features(image) -> int array [H, W]`` of bin indices in [0, num_bins).
        num_bins (int): number of bins.

    Returns:
        Validation mIoU in [0, 1].
    """
    n = num_classes
    votes = np.zeros(num_bins * n, dtype=np.int64)
    for image, mask in load_pairs(root, "train"):
        valid = mask < n
        votes += np.bincount(features(image)[valid] * n + mask[valid], minlength=num_bins * n)
    table = votes.reshape(num_bins, n).argmax(axis=1)
    confusion = np.zeros((n, n), dtype=np.int64)
    for image, mask in load_pairs(root, "val"):
        valid = mask < n
        pred = table[features(image)[valid]]
        confusion += np.bincount(mask[valid].astype(np.int64) * n + pred, minlength=n * n).reshape(n, n)
    return miou(confusion)


def format_balance(meta) -> str:
    """The class balance of a meta dict as a text table (pixel share and images per split)."""
    lines = [f"{'class':<12}{'train px':>10}{'val px':>9}{'train img':>11}{'val img':>9}"]
    counts = meta.get("class_image_counts", {})
    for c, name in enumerate(meta["classes"]):
        images = "".join(f"{counts[s][c]:>{w}}" for s, w in (("train", 11), ("val", 9))) if counts else ""
        lines.append(f"{name:<12}{meta['class_balance']['train'][c]:>10.2%}"
                     f"{meta['class_balance']['val'][c]:>9.2%}{images}")
    return "\n".join(lines)
