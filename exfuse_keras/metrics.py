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


# Boundary IoU's band width as a fraction of the image diagonal (Cheng et al., CVPR 2021).
BOUNDARY_DILATION_RATIO = 0.02


def boundary_width(height, width, dilation_ratio: float = BOUNDARY_DILATION_RATIO):
    """The band width d in pixels: ``round(ratio * diagonal)``, at least 1 (a scalar tensor)."""
    diagonal = tf.sqrt(tf.cast(height, tf.float32) ** 2 + tf.cast(width, tf.float32) ** 2)
    return tf.maximum(tf.cast(tf.round(dilation_ratio * diagonal), tf.int32), 1)


def inner_boundary(masks: tf.Tensor, width, dont_care=None) -> tf.Tensor:
    """The pixels of binary masks within ``width`` (chessboard distance) of their contour.

    As Boundary IoU's reference code: the masks are padded with one pixel of background, so
    a mask's pixels next to the image border count as contour, then eroded ``width`` times by a
    3x3 square (what lies beyond the padding does not erode); the band is the mask minus its
    erosion. ``dont_care`` pixels (the ignore label) count as inside every mask while eroding,
    so they make no contour of their own.

    Args:
        masks: float ``[N, H, W, K]`` of 0/1.
        width: int, d >= 1.
        dont_care: optional float ``[N, H, W, 1]`` of 0/1.

    Returns:
        float ``[N, H, W, K]`` of 0/1.
    """
    filled = masks if dont_care is None else tf.maximum(masks, dont_care)
    padded = tf.pad(filled, [[0, 0], [1, 1], [1, 1], [0, 0]])
    eroded = tf.while_loop(lambda i, x: i < width,
                           lambda i, x: (i + 1, -tf.nn.max_pool2d(-x, 3, 1, "SAME")),
                           (tf.constant(0), padded))[1]
    return masks * (1.0 - eroded[:, 1:-1, 1:-1, :])


def boundary_counts(labels: tf.Tensor, predictions: tf.Tensor, num_classes: int, ignore_label: int = 255,
                    dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> tf.Tensor:
    """Per-class intersection and union of the ground truth's and the prediction's contour bands.

    Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
    Evaluation", CVPR 2021) for semantic segmentation: for class c, ``G_c`` and ``P_c`` are the
    pixels of c within d of the contour of c's ground-truth and predicted masks
    (``inner_boundary``, d = ``boundary_width`` of the image); the class's score over a split is
    ``sum |G_c & P_c| / sum |G_c | P_c|``. Pixels labelled ``ignore_label`` are counted in
    neither and make no contour in either (VOC's void borders would otherwise draw a contour the
    prediction cannot match), so a prediction equal to the labels outside them scores 1.

    Args:
        labels: int ``[N, H, W]`` ground truth.
        predictions: int ``[N, H, W]`` predicted classes.
        num_classes: C.
        ignore_label: label left out.
        dilation_ratio: d as a fraction of the image diagonal.

    Returns:
        float64 ``[2, C]``: intersections, unions.
    """
    labels = tf.cast(labels, tf.int32)
    valid = tf.cast(tf.logical_and(tf.not_equal(labels, ignore_label), labels < num_classes), tf.float32)
    dont_care = 1.0 - valid[..., None]
    ground_truth = tf.one_hot(tf.where(valid > 0, labels, -1), num_classes)
    predicted = tf.one_hot(tf.cast(predictions, tf.int32), num_classes) * valid[..., None]
    shape = tf.shape(labels)
    width = boundary_width(shape[1], shape[2], dilation_ratio)
    gt_band = inner_boundary(ground_truth, width, dont_care)
    pred_band = inner_boundary(predicted, width, dont_care)
    intersection = tf.reduce_sum(gt_band * pred_band, axis=[0, 1, 2])
    union = tf.reduce_sum(tf.maximum(gt_band, pred_band), axis=[0, 1, 2])
    return tf.cast(tf.stack([intersection, union]), tf.float64)


def boundary_iou_from_counts(counts: np.ndarray) -> dict:
    """``{"boundary_miou", "boundary_iou"}`` from summed ``boundary_counts``: the per-class
    boundary IoU (NaN where a class has no band in either) and its mean over classes with one."""
    intersection, union = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / union, np.nan)
    present = union > 0
    return {"boundary_miou": float(np.mean(iou[present])) if present.any() else 0.0, "boundary_iou": iou}
