"""Sliding-window inference for images larger than the training crop, in TF ops.

A network trained on ``crop x crop`` crops can be run on a whole large image (it is fully
convolutional), but its context then differs from training and its memory grows with the
image. Sliding-window inference predicts overlapping ``crop x crop`` windows instead:

- **Windows.** Along each axis of length L the windows start at 0, stride, 2·stride, ... and
  the last one is shifted back to end exactly at the border (start ``L - crop``), so every
  window lies inside the image and the last overlap may be larger than the others. An image
  smaller than the crop along an axis is first padded at the bottom/right with the fill colour
  (the training mean, as training pads its crops) to the crop, and the prediction is cropped
  back.
- **Each window** is predicted with ``tta.predict_probabilities`` (so multi-scale + flip
  applies per window) and gives softmax probabilities ``[B, crop, crop, C]``.
- **Blending: centre parts, averaged.** A window's outermost ``margin`` pixels along an edge
  that lies *inside* the image see too little context (its convolutions saw padding where
  the image goes on), so they get weight 0; along an edge at the image border they keep
  weight 1 (there is no better window for them). Every other pixel of a window has weight 1,
  and each image pixel gets the weighted mean of the probabilities of the windows covering
  it. The default ``margin = (crop - stride) // 2`` makes the kept centre parts tile the
  image (neighbours share at most a one-pixel seam, more where the last window was shifted),
  so this is centre-crop stitching with averaging where kept parts overlap; ``margin=0``
  is the plain average of all overlapping windows. ``2·margin <= crop - stride`` guarantees
  every pixel a window with weight 1.

Consequence (tested): for a fully convolutional model whose receptive field radius is at most
``margin``, and a fill equal to the model's own zero padding, sliding-window probabilities
equal whole-image probabilities up to float rounding.

The loop over windows is a ``tf.while_loop`` over a count computed from the image's dynamic
shape, so this runs eagerly and inside an exported graph alike.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from exfuse_keras.config import OUTPUT_STRIDE
from exfuse_keras.inference.tta import pad_to_size, predict_probabilities


def checked_margin(crop: int, stride: int, margin=None) -> int:
    """The window margin (default ``(crop - stride) // 2``) after checking crop, stride and margin.

    Raises:
        ValueError: not ``0 < stride <= crop``, or the margin outside ``[0, (crop - stride) / 2]``.
    """
    if crop <= 0 or not 0 < stride <= crop:
        raise ValueError(f"sliding window: expected 0 < stride <= crop, got crop {crop}, stride {stride}")
    margin = (crop - stride) // 2 if margin is None else margin
    if not 0 <= 2 * margin <= crop - stride:
        raise ValueError(f"sliding window: margin must be in [0, (crop - stride) / 2] = [0, {(crop - stride) // 2}],"
                         f" got {margin}")
    return margin


def window_starts(length: tf.Tensor, crop: int, stride: int) -> tf.Tensor:
    """Window start offsets along an axis of ``length >= crop``: 0, stride, ..., and ``length - crop`` last."""
    last = tf.maximum(length - crop, 0)
    count = (last + stride - 1) // stride + 1
    return tf.minimum(tf.range(count) * stride, last)


def _edge_weights(start: tf.Tensor, length: tf.Tensor, crop: int, margin: int) -> tf.Tensor:
    """float32 [crop]: 0 for the ``margin`` pixels next to a window edge inside the image, else 1."""
    position = tf.range(crop)
    keep_low = tf.logical_or(tf.equal(start, 0), position >= margin)
    keep_high = tf.logical_or(tf.equal(start + crop, length), position < crop - margin)
    return tf.cast(tf.logical_and(keep_low, keep_high), tf.float32)


def predict_sliding(logits_fn, images: tf.Tensor, crop: int, stride: int, scales: Sequence[float] = (1.0,),
                    flip: bool = False, fill=(0.0, 0.0, 0.0), multiple: int = OUTPUT_STRIDE,
                    margin: Optional[int] = None) -> tf.Tensor:
    """Probabilities ``[B, H, W, C]`` from overlapping ``crop x crop`` windows (see module doc).

    Args:
        logits_fn: ``images [B, h, w, 3] -> logits [B, h, w, C]`` (``tta.logits_function(model)``).
        images: ``[B, H, W, 3]`` float32 RGB 0-255, any H and W.
        crop: window side (the training crop; a multiple of ``multiple`` avoids padding windows).
        stride: offset between windows, ``0 < stride <= crop``.
        scales, flip: test-time augmentation of every window (``tta.predict_probabilities``).
        fill: RGB colour of any padding (the config's ``data.mean_rgb``).
        multiple: each window view is padded to a multiple of this.
        margin: pixels discarded along window edges inside the image; default
            ``(crop - stride) // 2``, at most that.

    Raises:
        ValueError: a bad crop, stride or margin.
    """
    margin = checked_margin(crop, stride, margin)
    images = tf.convert_to_tensor(images, tf.float32)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    canvas_h, canvas_w = tf.maximum(height, crop), tf.maximum(width, crop)
    canvas = pad_to_size(images, canvas_h, canvas_w, fill)
    rows = window_starts(canvas_h, crop, stride)
    cols = window_starts(canvas_w, crop, stride)
    num_cols = tf.size(cols)

    def weighted_window(index):
        """(weight x probabilities, weight), both padded to the canvas, of window ``index``."""
        top, left = rows[index // num_cols], cols[index % num_cols]
        window = canvas[:, top:top + crop, left:left + crop, :]
        probabilities = predict_probabilities(logits_fn, window, scales, flip, fill, multiple)
        weight = (_edge_weights(top, canvas_h, crop, margin)[:, None]
                  * _edge_weights(left, canvas_w, crop, margin)[None, :])[None, :, :, None]
        place = [[0, 0], [top, canvas_h - top - crop], [left, canvas_w - left - crop], [0, 0]]
        return tf.pad(probabilities * weight, place), tf.pad(weight, place)

    total, weights = weighted_window(0)

    def body(index, total, weights):
        more, more_weights = weighted_window(index)
        return index + 1, total + more, weights + more_weights

    _, total, weights = tf.while_loop(lambda index, *_: index < tf.size(rows) * num_cols, body,
                                      (tf.constant(1), total, weights))
    return (total / weights)[:, :height, :width, :]
