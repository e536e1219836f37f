"""Streaming mean IoU from a confusion matrix, the PASCAL VOC metric.

Convention (as the VOC devkit): one confusion matrix is accumulated over the whole split,
pixels labelled ``ignore_label`` are left out, and per class
``IoU = TP / (TP + FP + FN)``. A class absent from both ground truth and prediction (zero
union) is left out of the mean; it is not counted as 0 or 1. Per-image IoUs are never averaged.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from exfuse_keras.losses import labels_like


def confusion_matrix(labels: tf.Tensor, predictions: tf.Tensor, num_classes: int, ignore_label: int = 255):
    """``[C, C]`` float64 counts, rows = ground truth, columns = prediction; ignore pixels skipped."""
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
    valid = tf.logical_and(tf.not_equal(labels, ignore_label), labels < num_classes)
    # A segment sum over all pixels, ignore pixels weighted 0: static shapes, so XLA compiles it
    # (boolean_mask + bincount does not).
    index = tf.where(valid, labels * num_classes + predictions, tf.zeros_like(labels))
    counts = tf.math.unsorted_segment_sum(tf.cast(valid, tf.float64), index, num_classes * num_classes)
    return tf.reshape(counts, [num_classes, num_classes])


def scores_from_confusion(matrix: np.ndarray) -> dict:
    """mIoU, per-class IoU and accuracy, pixel accuracy and mean class accuracy (numpy)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    gt = matrix.sum(axis=1)
    pred = matrix.sum(axis=0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        accuracy = np.where(gt > 0, tp / gt, np.nan)
    present = union > 0
    return {
        "miou": float(np.mean(iou[present])) if present.any() else 0.0,
        "iou": iou,
        "class_accuracy": accuracy,
        "pixel_accuracy": float(tp.sum() / max(matrix.sum(), 1.0)),
        "mean_class_accuracy": float(np.nanmean(accuracy)) if (gt > 0).any() else 0.0,
    }


@keras.saving.register_keras_serializable(package="exfuse")
class StreamingMeanIoU(keras.metrics.Metric):
    """Mean IoU over everything seen since the last reset (the VOC convention above).

    ``update_state(y_true, y_pred)``: ``y_true`` the label mask ``[N, H, W]`` (or ``[..., 1]``),
    ``y_pred`` logits or probabilities ``[N, h, w, C]`` (argmax taken; the mask is resized
    nearest to ``h, w`` when they differ). The confusion-matrix variable is summed across
    replicas by tf.distribute, so the result is correct under any strategy.

    Args:
        num_classes: C.
        ignore_label: label value left out of the matrix.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255, name: str = "miou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.matrix = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                        dtype="float64", name="confusion_matrix", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = labels_like(y_true, y_pred)
        predictions = tf.argmax(y_pred, axis=-1)
        self.matrix.assign_add(confusion_matrix(labels, predictions, self.num_classes, self.ignore_label))

    def result(self):
        matrix = tf.convert_to_tensor(self.matrix)
        tp = tf.linalg.diag_part(matrix)
        union = tf.reduce_sum(matrix, 0) + tf.reduce_sum(matrix, 1) - tp
        present = union > 0
        iou = tf.math.divide_no_nan(tp, union)
        count = tf.reduce_sum(tf.cast(present, tf.float64))
        return tf.cast(tf.math.divide_no_nan(tf.reduce_sum(tf.where(present, iou, 0.0)), count), tf.float32)

    def reset_state(self):
        self.matrix.assign(tf.zeros_like(self.matrix))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_label": self.ignore_label}
