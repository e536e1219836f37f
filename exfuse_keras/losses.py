"""Losses for each model output, each deriving its own target from the one label mask.

- ``"logits"``: softmax cross-entropy over valid pixels (label != ignore).
- ``"ecre"``: the same at 1/16 (ExFuse Sec. 3.2: the supervision is what makes the sub-pixel
  upsampling work), against a target built as ``train.ecre_target`` says (``ECRECrossEntropy``).
- ``"ss_<level>"``: sigmoid cross-entropy on the multi-hot set of classes present in the
  crop (segmentation-time Semantic Supervision, Sec. 3.1).

Replica invariance: every loss returns (sum over this replica's terms) / (count over the
*global* batch), the count all-reduced across replicas when more than one is in sync. Keras
sums the replicas' gradients, so 1 device and N replicas give the same loss and gradients
(docs/design.md, "Losses"). The reduction is therefore ``"sum"`` of an already
normalised scalar.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf


def global_sum(value: tf.Tensor) -> tf.Tensor:
    """Sums ``value`` over the replicas in sync (identity on one device)."""
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


def labels_like(mask: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """The int32 label map ``[N, h, w]`` at the logits' resolution (nearest when it differs).

    No ``tf.cond`` on the sizes: its two branches have different shapes, which XLA
    (``jit_compile``) cannot compile. When the static sizes do not prove them equal the mask
    is resized unconditionally; nearest resizing to the same size is the identity.
    """
    mask = tf.convert_to_tensor(mask)
    if mask.shape.rank == 4:
        mask = mask[..., 0]
    mask = tf.cast(mask, tf.int32)
    static_source, static_target = mask.shape[1:3], logits.shape[1:3]
    if static_source.is_fully_defined() and static_source == static_target:
        return mask
    return tf.image.resize(mask[..., None], tf.shape(logits)[1:3], method="nearest")[..., 0]


def class_presence(mask: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Multi-hot ``[N, num_classes]``: 1 where a class has at least one pixel in the image."""
    mask = tf.convert_to_tensor(mask)
    if mask.shape.rank == 4:
        mask = mask[..., 0]
    flat = tf.reshape(tf.cast(mask, tf.int32), [tf.shape(mask)[0], -1])
    one_hot = tf.one_hot(flat, num_classes, dtype=tf.float32)  # ignore (>= C) becomes all zeros
    return tf.reduce_max(one_hot, axis=1)


@keras.saving.register_keras_serializable(package="exfuse")
class SegmentationCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy over valid pixels, normalised by the global valid-pixel count.

    ``y_true``: the label mask ``[N, H, W]`` (or ``[N, H, W, 1]``), ignore label excluded;
    ``y_pred``: logits ``[N, h, w, C]``; the mask is resized nearest when ``h, w`` differ
    (the ECRE output at 1/16).

    Args:
        num_classes: C.
        ignore_label: label value that contributes nothing (VOC's 255).
        class_weights: optional per-class weights (length C), multiplying each pixel's loss.
        ohem_fraction: online hard example mining: keep only the hardest fraction of this
            replica's valid pixels (``None`` keeps all).
    """

    def __init__(self, num_classes: int, ignore_label: int = 255,
                 class_weights: Optional[Sequence[float]] = None, ohem_fraction: Optional[float] = None,
                 name: str = "segmentation_cross_entropy", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.ohem_fraction = ohem_fraction

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        labels = labels_like(y_true, logits)
        valid = tf.logical_and(tf.not_equal(labels, self.ignore_label), labels < self.num_classes)
        safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
        weights = tf.cast(valid, tf.float32)
        if self.class_weights is not None:
            weights *= tf.gather(tf.constant(self.class_weights, tf.float32), safe_labels)
        if self.ohem_fraction is not None:
            flat = tf.reshape(tf.where(valid, per_pixel, -1.0), [-1])
            keep = tf.maximum(1, tf.cast(tf.cast(tf.reduce_sum(tf.cast(valid, tf.int32)), tf.float32)
                                         * self.ohem_fraction, tf.int32))
            threshold = tf.math.top_k(flat, k=tf.minimum(keep, tf.size(flat))).values[-1]
            weights *= tf.cast(per_pixel >= threshold, tf.float32)
        count = global_sum(tf.reduce_sum(tf.cast(weights > 0, tf.float32)))
        return tf.reduce_sum(per_pixel * weights) / tf.maximum(count, 1.0)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        return {**config, "num_classes": self.num_classes, "ignore_label": self.ignore_label,
                "class_weights": self.class_weights, "ohem_fraction": self.ohem_fraction}


ECRE_TARGETS = ("nearest", "soft", "upsampled")


@keras.saving.register_keras_serializable(package="exfuse")
class ECRECrossEntropy(SegmentationCrossEntropy):
    """The loss of ECRE's auxiliary output (Sec. 3.2, Fig. 5), with three readings of "the
    labels at that resolution" (the paper says no more):

    - ``nearest``: one label per cell, picked by nearest resizing (each cell of s x s pixels,
      s = H / h, takes one of its pixels' labels); cross-entropy over cells with a valid label;
    - ``soft``: each cell's class shares, ``q[c] = (its valid pixels of class c) / (its valid
      pixels)`` (ignore pixels left out of the shares), and the cross-entropy ``-sum_c q[c] log
      p[c]`` against them, over cells with at least one valid pixel;
    - ``upsampled``: the auxiliary logits resized bilinearly to the labels' size and the ordinary
      per-pixel cross-entropy there (the supervision of the sub-pixel map at full resolution).

    ``soft`` needs H and W to be multiples of h and w (the model's 1/16 output at input sizes
    that are multiples of 32). Normalised by the global count of cells (``upsampled``: pixels),
    as every loss here is (module docstring). ``class_weights`` weigh a cell by its (expected)
    class's weight.

    Args:
        num_classes, ignore_label, class_weights: as ``SegmentationCrossEntropy``.
        target: ``"nearest"``, ``"soft"`` or ``"upsampled"``.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255, class_weights: Optional[Sequence[float]] = None,
                 target: str = "nearest", name: str = "ecre_loss", **kwargs):
        if target not in ECRE_TARGETS:
            raise ValueError(f"target must be one of {ECRE_TARGETS}, got {target!r}")
        super().__init__(num_classes, ignore_label, class_weights, None, name=name, **kwargs)
        self.target = target

    def call(self, y_true, y_pred):
        if self.target == "nearest":
            return super().call(y_true, y_pred)
        mask = tf.convert_to_tensor(y_true)
        if mask.shape.rank == 4:
            mask = mask[..., 0]
        mask = tf.cast(mask, tf.int32)
        logits = tf.cast(y_pred, tf.float32)
        if self.target == "upsampled":
            return super().call(mask, tf.image.resize(logits, tf.shape(mask)[1:3], method="bilinear"))
        n, h, w = tf.shape(logits)[0], tf.shape(logits)[1], tf.shape(logits)[2]
        rows, cols = tf.shape(mask)[1] // h, tf.shape(mask)[2] // w
        valid = tf.logical_and(tf.not_equal(mask, self.ignore_label), mask < self.num_classes)
        one_hot = tf.one_hot(tf.where(valid, mask, -1), self.num_classes, dtype=tf.float32)  # ignore: zeros
        cells = tf.reduce_sum(tf.reshape(one_hot, tf.stack([n, h, rows, w, cols, self.num_classes])), axis=[2, 4])
        counts = tf.reduce_sum(cells, axis=-1)                               # valid pixels per cell
        shares = cells / tf.maximum(counts, 1.0)[..., None]
        per_cell = -tf.reduce_sum(shares * tf.nn.log_softmax(logits, axis=-1), axis=-1)
        weights = tf.cast(counts > 0, tf.float32)
        if self.class_weights is not None:
            weights *= tf.reduce_sum(shares * tf.constant(self.class_weights, tf.float32), axis=-1)
        count = global_sum(tf.reduce_sum(tf.cast(counts > 0, tf.float32)))
        return tf.reduce_sum(per_cell * weights) / tf.maximum(count, 1.0)

    def get_config(self):
        config = super().get_config()
        config.pop("ohem_fraction", None)
        return {**config, "target": self.target}


@keras.saving.register_keras_serializable(package="exfuse")
class ClassPresenceLoss(keras.losses.Loss):
    """Sigmoid cross-entropy on which classes are present, for the SS heads' logits.

    ``y_true``: the label mask; ``y_pred``: ``[N, C]`` logits. Averaged over classes and over
    the images of the global batch that have a labelled pixel (an image whose pixels are all
    ignored says nothing about which classes it shows, e.g. the filler of a last batch).
    """

    def __init__(self, num_classes: int, name: str = "class_presence", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", **kwargs)
        self.num_classes = num_classes

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        targets = class_presence(y_true, self.num_classes)
        per_image = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=-1)
        flat = tf.reshape(tf.cast(y_true, tf.int32), [tf.shape(per_image)[0], -1])
        labelled = tf.cast(tf.reduce_any((flat >= 0) & (flat < self.num_classes), axis=1), tf.float32)
        images = global_sum(tf.reduce_sum(labelled))
        return tf.reduce_sum(per_image * labelled) / tf.maximum(images, 1.0)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        return {**config, "num_classes": self.num_classes}


def build_losses(cfg, output_names: Sequence[str]) -> tuple[dict, dict]:
    """The loss and loss weight for each of the model's outputs, from ``cfg.train``."""
    num_classes, ignore = cfg.data.num_classes, cfg.data.ignore_label
    t = cfg.train
    losses, weights = {}, {}
    for name in output_names:
        if name == "logits":
            losses[name] = SegmentationCrossEntropy(num_classes, ignore, t.class_weights, t.ohem_fraction,
                                                    name="logits_loss")
            weights[name] = 1.0
        elif name == "ecre":
            losses[name] = ECRECrossEntropy(num_classes, ignore, t.class_weights, t.ecre_target, name="ecre_loss")
            weights[name] = t.ecre_loss_weight
        elif name.startswith("ss_"):
            losses[name] = ClassPresenceLoss(num_classes, name=f"{name}_loss")
            weights[name] = t.ss_loss_weight
        else:
            raise ValueError(f"no loss is defined for model output {name!r}")
    return losses, weights
