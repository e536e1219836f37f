"""Sliding-window prediction of one large image band by band, with bounded memory.

``sliding.predict_sliding`` runs in TF ops (evaluation, exported graphs) and keeps float32
``[B, H, W, C]`` sums for the whole image: 5.4 GB for an 8,000 x 8,000 image with 21 classes,
before the per-window padding. Here the same windows, weights and sums run from Python over a
single image held as it was decoded (uint8 stays uint8), one row of windows at a time:

- **Band accumulator.** Row ``i`` of windows covers canvas rows ``[top_i, top_i + crop)``. The
  weighted probabilities are summed into a float32 ``[crop, W, C]`` band that starts at
  ``top_i``. Window rows start in increasing order, so once row ``i`` is done no later window
  touches rows above ``top_{i+1}``: those rows are final. They are divided by their weights,
  their argmax goes into the uint8 mask, their probabilities into the caller's array if one was
  given, and the band moves down to ``top_{i+1}``.
- **Weights.** A window's weight is the product of its row and column edge weights
  (``sliding._edge_weights``), and windows form a grid, so the summed weight of a pixel is
  ``row_sum[y] * column_sum[x]``: two vectors, not an ``[H, W]`` array. The sums are small
  integers, exact in float32.
- **Same numbers.** Every pixel adds the same float32 terms (weight x window probabilities,
  each window through ``tta.predict_probabilities``) in the same window order as
  ``predict_sliding`` and divides by the same weight, so probabilities and masks equal its
  output for a batch of one (tested on odd sizes, overlaps, margins, scales and flip).

Memory: the image, the uint8 mask, one float32 ``[crop, W, C]`` band (finished rows are
averaged and the band moved in place), and one window's TF activations; nothing of size
``H x W x C`` unless the caller passes an array for the probabilities (a ``numpy.memmap`` keeps
them on disk).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from exfuse_keras.config import OUTPUT_STRIDE
from exfuse_keras.inference.sliding import _edge_weights, checked_margin, window_starts
from exfuse_keras.inference.tta import predict_probabilities


def window_count(height: int, width: int, crop: int, stride: int) -> int:
    """How many ``crop x crop`` windows cover an ``height x width`` image (one image)."""
    rows = window_starts(tf.constant(max(height, crop)), crop, stride)
    cols = window_starts(tf.constant(max(width, crop)), crop, stride)
    return int(tf.size(rows)) * int(tf.size(cols))


def _summed_weights(starts: np.ndarray, length: int, crop: int, margin: int) -> tuple[list, np.ndarray]:
    """(per-window float32 [crop] edge weights, float32 [length] sum of them over all windows)."""
    weights = [_edge_weights(tf.constant(int(start)), tf.constant(length), crop, margin).numpy() for start in starts]
    total = np.zeros(length, np.float32)
    for start, weight in zip(starts, weights):
        total[start:start + crop] += weight
    return weights, total


def predict_sliding_bands(logits_fn, image: np.ndarray, crop: int, stride: int, scales: Sequence[float] = (1.0,),
                          flip: bool = False, fill=(0.0, 0.0, 0.0), multiple: int = OUTPUT_STRIDE,
                          margin: Optional[int] = None, probabilities=None, progress: Optional[bool] = None,
                          mask_dtype=np.uint8) -> np.ndarray:
    """The mask ``[H, W]`` of one image from overlapping ``crop x crop`` windows (module doc;
    windows, weights and arguments as ``sliding.predict_sliding``).

    Args:
        logits_fn: ``images [B, h, w, 3] -> logits [B, h, w, C]``.
        image: ``[H, W, 3]`` RGB 0-255, uint8 or float (converted one window at a time).
        crop, stride, scales, flip, fill, multiple, margin: as ``sliding.predict_sliding``.
        probabilities: None, or an array ``[H, W, C]`` (numpy array, ``numpy.memmap``, anything
            that takes slice assignment) the float32 probabilities are written into, band by band.
        progress: a progress bar of windows done / total with the time left, on stderr: True,
            False, or None for only when stderr is a terminal.
        mask_dtype: the mask's dtype (uint8 up to 256 classes).

    Raises:
        ValueError: a bad crop, stride or margin, or a ``probabilities`` array of the wrong shape.
    """
    from tqdm import tqdm

    margin = checked_margin(crop, stride, margin)
    height, width = image.shape[:2]
    canvas_h, canvas_w = max(height, crop), max(width, crop)
    rows = window_starts(tf.constant(canvas_h), crop, stride).numpy()
    cols = window_starts(tf.constant(canvas_w), crop, stride).numpy()
    row_weights, row_sum = _summed_weights(rows, canvas_h, crop, margin)
    col_weights, col_sum = _summed_weights(cols, canvas_w, crop, margin)
    fill = np.asarray(fill, np.float32)
    mask = np.empty((height, width), mask_dtype)
    band = None
    # tqdm's disable=None: a bar only when stderr is a terminal.
    bar = tqdm(total=len(rows) * len(cols), desc="windows", unit="window",
               disable=None if progress is None else not progress)
    try:
        for i, top in enumerate(rows):
            for left, col_weight in zip(cols, col_weights):
                window = np.empty((crop, crop, 3), np.float32)
                window[...] = fill
                part = image[top:top + crop, left:left + crop]
                window[:part.shape[0], :part.shape[1]] = part
                window_probabilities = predict_probabilities(logits_fn, window[None], scales, flip, fill,
                                                             multiple).numpy()[0]
                if band is None:
                    num_classes = window_probabilities.shape[-1]
                    if probabilities is not None and tuple(probabilities.shape) != (height, width, num_classes):
                        raise ValueError(f"probabilities: expected an array [{height}, {width}, {num_classes}], "
                                         f"got shape {tuple(probabilities.shape)}")
                    band = np.zeros((crop, canvas_w, num_classes), np.float32)
                weight = (row_weights[i][:, None] * col_weight[None, :])[:, :, None]
                band[:, left:left + crop] += window_probabilities * weight
                bar.update()
            done = (rows[i + 1] if i + 1 < len(rows) else top + crop) - top
            final = min(done, height - top)
            if final > 0:
                averaged = band[:final, :width]
                averaged /= (row_sum[top:top + final, None] * col_sum[None, :width])[:, :, None]
                mask[top:top + final] = averaged.argmax(-1)
                if probabilities is not None:
                    probabilities[top:top + final] = averaged
            # Move the band down by `done` rows in place, `done` rows at a time (source and
            # destination never overlap, so numpy makes no temporary copy).
            for row in range(0, crop - done, done):
                rows_moved = min(done, crop - done - row)
                band[row:row + rows_moved] = band[row + done:row + done + rows_moved]
            band[crop - done:] = 0
    finally:
        bar.close()
    return mask
