"""Look at a dataset before training on it: images with their masks, a class legend, label counts.

Usage::

    python -m exfuse_keras.data.browse --config my_data.yaml [--split train] [--count 8]
        [--augmented] [--output browse.png] [--set KEY=VALUE ...]

Reads the split through the same prepared records and input pipeline training uses (so the
records are prepared, with every check of exfuse_keras/data/checks.py, on the first call), for
every dataset kind: VOC, SBD, COCO, mixes, the built-in ones, a folder of your own. Writes one
PNG: a row per image (``image | mask | overlay``; the mask in ``data.palette``'s colours, ignored
pixels in VOC's void colour, the overlay half image, half mask where a pixel is labelled), then
a legend of every class with its colour, its pixels and the images that hold it. With
``--augmented`` the rows are what the training pipeline gives (random scale, crop, flip, the
padding marked ignore), drawn in the config's seed; the counts are always those of the split
itself, over every image (``--max-images`` for the first N only). The counts are also printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import numpy as np

OVERLAY_ALPHA = 0.5
COLUMNS = ("image", "mask", "overlay")


def overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, ignore_label: int) -> np.ndarray:
    """uint8 ``[H, W, 3]``: ``image`` blended half and half with the mask's colours where a pixel
    is labelled (not ``ignore_label``), the image itself elsewhere."""
    blend = (1 - OVERLAY_ALPHA) * image.astype(np.float32) + OVERLAY_ALPHA * colours.astype(np.float32)
    labelled = (mask != ignore_label)[..., None]
    return np.where(labelled, np.round(blend), image).astype(np.uint8)


def label_counts(cfg, split: str, max_images: Optional[int] = None, progress: bool = True) -> dict:
    """``{"pixels": int64 [256], "images": int64 [256], "count": images read}`` over the split's
    records (each image's own area, without the evaluation pipeline's padding)."""
    from tqdm import tqdm

    from exfuse_keras.data.pipeline import make_dataset
    from exfuse_keras.data.progress import bar_disable

    pixels, images, count = np.zeros(256, np.int64), np.zeros(256, np.int64), 0
    dataset = make_dataset(cfg, split, training=False, batch_size=1, return_meta=True)
    if max_images is not None:
        dataset = dataset.take(max_images)
    for _, masks, meta in tqdm(dataset, desc=f"counting labels ({split})", unit="img",
                               disable=bar_disable(progress)):
        height, width = int(meta["size"][0, 0]), int(meta["size"][0, 1])
        found = np.bincount(masks[0, :height, :width].numpy().astype(np.uint8).ravel(), minlength=256)
        pixels += found
        images += found > 0
        count += 1
    return {"pixels": pixels, "images": images, "count": count}


def browse_rows(cfg, split: str, count: int, augmented: bool = False) -> list[tuple[np.ndarray, ...]]:
    """(image, mask in colours, overlay) uint8 ``[H, W, 3]`` of the split's first ``count``
    examples, or of ``count`` training-pipeline crops with ``augmented``."""
    from exfuse_keras.data.palette import colorize
    from exfuse_keras.data.pipeline import make_dataset

    palette = cfg.data.palette if cfg.data.palette is not None else cfg.data.resolved_palette
    rows = []
    if augmented:
        from exfuse_keras.data.sizing import resolve_auto_sizes

        cfg, _ = resolve_auto_sizes(cfg, progress=False)  # data.crop_size: auto is the crop training takes
        batches = make_dataset(cfg, split, training=True, batch_size=1, repeat=True).take(count)
        pairs = [(images[0].numpy(), masks[0].numpy()) for images, masks in batches]
    else:
        pairs = []
        for images, masks, meta in make_dataset(cfg, split, training=False, batch_size=1,
                                                return_meta=True).take(count):
            height, width = int(meta["size"][0, 0]), int(meta["size"][0, 1])
            pairs.append((images[0, :height, :width].numpy(), masks[0, :height, :width].numpy()))
    for image, mask in pairs:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
        mask = mask.astype(np.uint8)
        colours = colorize(mask, palette)
        rows.append((image, colours, overlay(image, mask, colours, cfg.data.ignore_label)))
    return rows


def counts_table(cfg, counts: dict) -> str:
    """The per-class table: class, name, pixels (share of labelled pixels), images."""
    data = cfg.data
    labelled = int(counts["pixels"][:data.num_classes].sum())
    lines = [f"{'class':>5}  {'name':<20}{'pixels':>14}{'share':>8}{'images':>9}"]
    for k in range(data.num_classes):
        share = counts["pixels"][k] / labelled if labelled else 0.0
        lines.append(f"{k:>5}  {data.class_names[k]:<20}{counts['pixels'][k]:>14,}{share:>8.1%}"
                     f"{counts['images'][k]:>9,}")
    ignored = counts["pixels"][data.ignore_label]
    lines.append(f"{data.ignore_label:>5}  {'(ignored)':<20}{ignored:>14,}{'':>8}{counts['images'][data.ignore_label]:>9,}")
    lines.append(f"{counts['count']} images")
    return "\n".join(lines)


def legend_picture(cfg, counts: dict, width: int):
    """A PIL image ``width`` wide: one line per class (and the ignore label), its colour swatch,
    name, pixels and images."""
    from PIL import Image, ImageDraw, ImageFont

    from exfuse_keras.data.palette import colorize

    data = cfg.data
    palette = data.palette if data.palette is not None else data.resolved_palette
    labels = [*range(data.num_classes), data.ignore_label]
    colours = colorize(np.array([labels], np.uint8), palette)[0]
    line, swatch, gap = 14, 10, 4
    picture = Image.new("RGB", (max(width, 320), gap + line * (len(labels) + 1) + gap), "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    draw.text((gap, gap), f"{counts['count']} images: class, pixels, images", fill="black", font=font)
    for i, (label, colour) in enumerate(zip(labels, colours)):
        y = gap + line * (i + 1)
        draw.rectangle([gap, y + 1, gap + swatch, y + 1 + swatch], fill=tuple(int(v) for v in colour), outline="black")
        name = data.class_names[label] if label < data.num_classes else "ignored"
        draw.text((gap + swatch + 6, y), f"{label} {name}: {counts['pixels'][label]:,} px, "
                  f"{counts['images'][label]:,} images", fill="black", font=font)
    return picture


def browse_picture(cfg, rows, counts: dict, zoom: int = 1):
    """The rows (``evaluation.gallery.gallery_picture``) above the legend."""
    from PIL import Image

    from exfuse_keras.evaluation.gallery import gallery_picture

    grid = gallery_picture(rows, COLUMNS, zoom=zoom)
    legend = legend_picture(cfg, counts, grid.width)
    picture = Image.new("RGB", (max(grid.width, legend.width), grid.height + legend.height), "white")
    picture.paste(grid, (0, 0))
    picture.paste(legend, (0, grid.height))
    return picture


def main(argv: Optional[Sequence[str]] = None) -> int:
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the config whose data section names the dataset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", default="train")
    parser.add_argument("--count", type=int, default=8, help="images (rows) to draw")
    parser.add_argument("--augmented", action="store_true", help="draw the training pipeline's crops")
    parser.add_argument("--max-images", type=int, default=None, help="count labels over the first N images only")
    parser.add_argument("--zoom", type=int, default=1, help="draw each pixel as ZOOM x ZOOM")
    parser.add_argument("--output", default="browse.png", help="the PNG to write")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.count < 1 or args.zoom < 1 or (args.max_images is not None and args.max_images < 1):
        print("error: --count, --zoom and --max-images must be at least 1", file=sys.stderr)
        return 2
    if not args.output.lower().endswith(".png"):
        print(f"error: --output {args.output}: expected a .png file", file=sys.stderr)
        return 2

    from exfuse_keras.atomic import atomic_path
    from exfuse_keras.config import ConfigError, load_config
    from exfuse_keras.data.checks import DataError

    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.split not in ("train", "val", "test"):
        print(f"error: --split {args.split!r}: expected train, val or test", file=sys.stderr)
        return 2
    try:
        rows = browse_rows(cfg, args.split, args.count, args.augmented)
        counts = label_counts(cfg, args.split, args.max_images, progress=not args.no_progress)
    except (DataError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: the {args.split} split has no images", file=sys.stderr)
        return 2
    picture = browse_picture(cfg, rows, counts, args.zoom)
    with atomic_path(args.output) as path:
        picture.save(path, format="PNG")
    print(counts_table(cfg, counts))
    print(f"wrote {args.output}: {len(rows)} {'augmented crops' if args.augmented else 'images'} of {args.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
