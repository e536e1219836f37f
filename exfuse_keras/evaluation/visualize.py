"""Pictures of evaluation results, drawn with Pillow (matplotlib is not a dependency)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Row-normalised share 0 -> white, 1 -> dark blue.
_LOW = np.array([255, 255, 255], np.float64)
_HIGH = np.array([8, 48, 107], np.float64)


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each ground-truth row as shares of its pixels (a row without pixels stays 0)."""
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def confusion_picture(matrix: np.ndarray, class_names: Sequence[str], cell: int = 0) -> Image.Image:
    """An RGB heatmap of the row-normalised confusion matrix with class names.

    Rows are the ground truth, columns the prediction (as ``metrics.confusion_matrix``); a
    cell's colour runs from white (0 % of the row's pixels) to dark blue (100 %), and cells
    large enough show the percentage. Column names are written vertically above the grid.

    Args:
        matrix: ``[C, C]`` pixel counts.
        class_names: C names.
        cell: cell side in pixels; default 36 up to 25 classes, smaller above.
    """
    shares = row_normalised(matrix)
    count = len(shares)
    if len(class_names) != count:
        raise ValueError(f"confusion_picture: {count} classes in the matrix, {len(class_names)} names")
    cell = cell or max(12, min(36, 900 // max(count, 1)))
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label = max((probe.textlength(str(name), font=font) for name in class_names), default=0)
    label = int(label) + 10
    title_h = 18
    left, top = label, label + title_h
    picture = Image.new("RGB", (max(left + count * cell + 4, 220), top + count * cell + title_h + 4), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((left, 2), "columns: prediction", fill="black", font=font)
    draw.text((2, top + count * cell + 4), "rows: ground truth (row-normalised)", fill="black", font=font)
    for i, name in enumerate(class_names):
        y = top + i * cell + (cell - 10) // 2
        draw.text((4, y), str(name), fill="black", font=font)
        # A column name: drawn horizontally on its own strip, rotated to read bottom-up.
        strip = Image.new("RGB", (label, cell), "white")
        ImageDraw.Draw(strip).text((4, (cell - 10) // 2), str(name), fill="black", font=font)
        picture.paste(strip.rotate(90, expand=True), (left + i * cell, title_h))
    for i in range(count):
        for j in range(count):
            colour = tuple(int(round(c)) for c in _LOW + (_HIGH - _LOW) * shares[i, j])
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=colour, outline=(200, 200, 200))
            if cell >= 28 and shares[i, j] >= 0.005:
                text = f"{100 * shares[i, j]:.0f}"
                ink = "white" if shares[i, j] > 0.5 else "black"
                width = probe.textlength(text, font=font)
                draw.text((box[0] + (cell - width) / 2, box[1] + (cell - 10) / 2), text, fill=ink, font=font)
    return picture


def save_confusion_picture(path: str, matrix: np.ndarray, class_names: Sequence[str]) -> None:
    from exfuse_keras.atomic import atomic_path

    picture = confusion_picture(matrix, class_names)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
