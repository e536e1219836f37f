"""A picture of predictions on a split: one row per image, image | ground truth | prediction.

    python -m exfuse_keras.evaluation.gallery --weights runs/quickstart --count 4 \\
        --output docs/quickstart_prediction.png [--tta]

Ground truth and prediction are drawn in the config's palette (``data.palette``, else VOC's);
ignored pixels (255) in VOC's cream "void" colour.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLUMNS = ("image", "ground truth", "prediction")


def gallery_rows(cfg, segmenter, split: str = "val", count: int = 4, **protocol) -> list[tuple[np.ndarray, ...]]:
    """(image uint8 [H, W, 3], ground truth [H, W, 3], prediction [H, W, 3]) of the split's first images."""
    from exfuse_keras.data.pipeline import make_dataset

    rows = []
    for images, masks, meta in make_dataset(cfg, split, training=False, batch_size=1, return_meta=True).take(count):
        height, width = int(meta["size"][0, 0]), int(meta["size"][0, 1])
        image = images[0, :height, :width].numpy()
        truth = masks[0, :height, :width].numpy().astype(np.uint8)
        prediction, _ = segmenter.predict(image, **protocol)
        rows.append((image.astype(np.uint8), segmenter.colorize(truth), segmenter.colorize(prediction)))
    return rows


def gallery_picture(rows, columns=COLUMNS, gap: int = 4, zoom: int = 1) -> Image.Image:
    """The rows side by side under column titles, each cell at its image's size times ``zoom`` (nearest)."""
    rows = [tuple(np.repeat(np.repeat(cell, zoom, 0), zoom, 1) for cell in row) for row in rows]
    font = ImageFont.load_default()
    title = 16
    cell_w = max(cell.shape[1] for row in rows for cell in row)
    heights = [max(cell.shape[0] for cell in row) for row in rows]
    picture = Image.new("RGB", (len(columns) * (cell_w + gap) + gap, title + sum(h + gap for h in heights) + gap),
                        "white")
    draw = ImageDraw.Draw(picture)
    for j, name in enumerate(columns):
        draw.text((gap + j * (cell_w + gap), 2), name, fill="black", font=font)
    y = title + gap
    for row, height in zip(rows, heights):
        for j, cell in enumerate(row):
            picture.paste(Image.fromarray(cell), (gap + j * (cell_w + gap), y))
        y += height + gap
    return picture


def main(argv=None) -> int:
    from exfuse_keras.inference.arguments import (add_model_arguments, add_protocol_arguments,
                                                  protocol_from_arguments, segmenter_from_arguments)

    parser = argparse.ArgumentParser(description="Draw image | ground truth | prediction for a split's first images.")
    add_model_arguments(parser)
    parser.add_argument("--split", default="val")
    parser.add_argument("--count", type=int, default=4, help="images (rows)")
    parser.add_argument("--zoom", type=int, default=2, help="enlarge every cell this many times (nearest)")
    parser.add_argument("--output", required=True, help="PNG path")
    add_protocol_arguments(parser)
    args = parser.parse_args(argv)

    segmenter = segmenter_from_arguments(args)
    if segmenter is None:
        return 2
    scales, flip = protocol_from_arguments(args)
    rows = gallery_rows(segmenter.cfg, segmenter, args.split, args.count, scales=scales, flip=flip,
                        sliding_window=args.sliding_window)
    from exfuse_keras.atomic import atomic_path

    picture = gallery_picture(rows, zoom=args.zoom)
    with atomic_path(args.output) as tmp:
        picture.save(tmp, format="PNG")
    print(f"{len(rows)} images: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
