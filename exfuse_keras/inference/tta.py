"""Multi-scale + flip test-time augmentation (the paper's evaluation protocol), in TF ops.

ExFuse reports its final VOC numbers with multi-scale and flip testing (spec, "Evaluation"):
every image is resized by each scale in ``{0.5, 0.75, 1.0, 1.25, 1.5, 1.75}``, run with and
without a horizontal flip, and the class **probabilities** (softmax, not logits) are averaged at
the original resolution. Everything here is TensorFlow ops on tensors with dynamic H and W, so
the same function runs eagerly (evaluation, the Python API) and inside an exported serving graph.

Shapes: images ``[B, H, W, 3]`` float32 RGB 0-255 (normalisation is inside the model);
probabilities ``[B, H, W, C]`` float32. One batch shares one H and W; callers batch images of
equal size or pad (``pad_to_multiple`` pads with a fill colour, and ``predict_probabilities``
crops predictions back before resizing).
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from exfuse_keras.config import OUTPUT_STRIDE

PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def logits_function(model) -> Callable[[tf.Tensor], tf.Tensor]:
    """A callable ``images -> logits [B, h, w, C]`` for a Keras model with dict or single output."""

    def logits(images):
        outputs = model(images, training=False)
        if isinstance(outputs, dict):
            outputs = outputs["logits"]
        return tf.cast(outputs, tf.float32)

    return logits


def pad_to_multiple(images: tf.Tensor, multiple: int = OUTPUT_STRIDE, fill: Sequence[float] = (0.0, 0.0, 0.0)):
    """Pads ``[B, H, W, 3]`` at the bottom and right to multiples of ``multiple`` with ``fill``.

    The fill should be the mean colour the model was trained with (it pads crops with it), so
    padding looks like what the network saw at training time. The image's own pixels are
    copied unchanged: constant blocks are concatenated to it (``pad(x - fill) + fill`` would
    round them by up to an ulp).
    """
    return pad_to_size(images, _round_up(tf.shape(images)[1], multiple), _round_up(tf.shape(images)[2], multiple),
                       fill)


def pad_to_size(images: tf.Tensor, height, width, fill: Sequence[float] = (0.0, 0.0, 0.0)) -> tf.Tensor:
    """Pads ``[B, H, W, 3]`` at the bottom and right with ``fill`` to ``[B, height, width, 3]``
    (``height >= H``, ``width >= W``)."""
    shape = tf.shape(images)
    fill = tf.cast(fill, images.dtype)
    right = tf.broadcast_to(fill, tf.stack([shape[0], shape[1], width - shape[2], 3]))
    images = tf.concat([images, right], axis=2)
    bottom = tf.broadcast_to(fill, tf.stack([shape[0], height - shape[1], width, 3]))
    return tf.concat([images, bottom], axis=1)


def _round_up(size: tf.Tensor, multiple: int) -> tf.Tensor:
    return size + tf.math.floormod(-size, multiple)


def scaled_size(height: tf.Tensor, width: tf.Tensor, scale: float) -> tf.Tensor:
    """``[round(H·s), round(W·s)]``, at least 1 pixel each."""
    size = tf.cast(tf.stack([height, width]), tf.float32) * scale
    return tf.maximum(tf.cast(tf.round(size), tf.int32), 1)


def view_logits(logits_fn, images: tf.Tensor, fill=(0.0, 0.0, 0.0), multiple: int = OUTPUT_STRIDE) -> tf.Tensor:
    """Logits ``[B, H, W, C]`` of images of any size: padded to ``multiple`` with ``fill``,
    predicted, resized to the padded size when the model predicts at a stride, cropped back."""
    images = tf.convert_to_tensor(images, tf.float32)
    size = tf.shape(images)[1:3]
    padded = _round_up(size, multiple)
    logits = logits_fn(pad_to_multiple(images, multiple, fill))
    logits = tf.cond(tf.reduce_all(tf.equal(tf.shape(logits)[1:3], padded)), lambda: logits,
                     lambda: tf.image.resize(logits, padded, method="bilinear"))
    return logits[:, :size[0], :size[1], :]


def predict_at_scale(logits_fn, images: tf.Tensor, scale: float, flip: bool, fill=(0.0, 0.0, 0.0),
                     multiple: int = OUTPUT_STRIDE) -> tf.Tensor:
    """Softmax probabilities ``[B, H, W, C]`` for one (scale, flip) view, at the input resolution.

    The image is resized (bilinear) by ``scale``, optionally mirrored, padded to a multiple of
    ``multiple``; the logits are cropped to the scaled extent, turned into probabilities,
    un-mirrored and resized (bilinear) back to ``H, W``.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    view = images if scale == 1.0 else tf.image.resize(images, scaled_size(height, width, scale),
                                                       method="bilinear")
    if flip:
        view = tf.reverse(view, axis=[2])
    probabilities = tf.nn.softmax(view_logits(logits_fn, view, fill, multiple), axis=-1)
    if flip:
        probabilities = tf.reverse(probabilities, axis=[2])
    if scale != 1.0:
        probabilities = tf.image.resize(probabilities, tf.stack([height, width]), method="bilinear")
    return probabilities


def predict_probabilities(logits_fn, images: tf.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
                          fill=(0.0, 0.0, 0.0), multiple: int = OUTPUT_STRIDE) -> tf.Tensor:
    """The mean of softmax probabilities over ``scales`` × (no flip, flip), ``[B, H, W, C]``.

    ``scales=(1.0,)`` and ``flip=False`` is plain single-scale inference.

    Args:
        logits_fn: ``images [B, h, w, 3] -> logits [B, h, w, C]`` (``logits_function(model)``).
        images: ``[B, H, W, 3]`` float32 RGB 0-255.
        scales: resize factors (the paper: ``PAPER_SCALES``).
        flip: also average horizontally mirrored views.
        fill: the RGB colour of the padding (the config's ``data.mean_rgb``).
        multiple: pad each view to a multiple of this (the network's output stride, 32).
    """
    if not scales:
        raise ValueError("scales: at least one scale is needed")
    views = [(float(scale), mirrored) for scale in scales for mirrored in ((False, True) if flip else (False,))]
    total = None
    for scale, mirrored in views:
        probabilities = predict_at_scale(logits_fn, images, scale, mirrored, fill, multiple)
        total = probabilities if total is None else total + probabilities
    return total / float(len(views))
