"""Boundary IoU (exfuse_keras/metrics.py) against a numpy/scipy implementation of Cheng et al.'s
reference (``mask_to_boundary``: one pixel of zero padding, d erosions by a 3x3 square), with
ignore pixels counted nowhere and eroded as if inside every mask."""

import numpy as np
import pytest
from scipy import ndimage

from exfuse_keras.metrics import boundary_counts, boundary_iou_from_counts, confusion_matrix, scores_from_confusion


def reference_band(mask: np.ndarray, ignore: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    h, w = mask.shape
    d = max(int(round(ratio * np.sqrt(h * h + w * w))), 1)
    padded = np.pad(mask.astype(bool) | ignore, 1)
    eroded = ndimage.binary_erosion(padded, np.ones((3, 3), bool), iterations=d, border_value=1)[1:-1, 1:-1]
    return mask.astype(bool) & ~eroded


def reference_boundary_miou(labels, predictions, num_classes, ignore=255):
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for gt, pred in zip(labels, predictions):
        valid = gt != ignore
        for c in range(num_classes):
            g = reference_band((gt == c) & valid, ~valid)
            p = reference_band((pred == c) & valid, ~valid)
            inter[c] += (g & p).sum()
            union[c] += (g | p).sum()
    present = union > 0
    return float(np.mean(inter[present] / union[present])), inter, union


def miou(labels, predictions, num_classes):
    return scores_from_confusion(confusion_matrix(labels, predictions, num_classes).numpy())["miou"]


def _scene(rng, h=60, w=90):
    mask = np.zeros((h, w), np.int32)
    mask[10:45, 8:50] = 1
    yy, xx = np.mgrid[0:h, 0:w]
    mask[(yy - 30) ** 2 + (xx - 68) ** 2 < 15 ** 2] = 2
    mask[rng.uniform(size=(h, w)) < 0.02] = 255
    return mask


def test_perfect_prediction_scores_one():
    labels = _scene(np.random.default_rng(0))[None]
    predictions = np.where(labels == 255, np.random.default_rng(1).integers(0, 3, labels.shape), labels)
    scores = boundary_iou_from_counts(boundary_counts(labels, predictions, 3).numpy())
    assert scores["boundary_miou"] == pytest.approx(1.0)


@pytest.mark.parametrize("shift", [1, 3])
def test_matches_the_reference_on_shifted_and_noisy_predictions(shift):
    rng = np.random.default_rng(shift)
    labels = np.stack([_scene(rng), _scene(rng)])
    predictions = np.roll(np.where(labels == 255, 0, labels), shift, axis=2)
    predictions[1, rng.uniform(size=predictions.shape[1:]) < 0.05] = 1
    expected, inter, union = reference_boundary_miou(labels, predictions, 3)
    counts = boundary_counts(labels, predictions, 3).numpy()
    np.testing.assert_allclose(counts, np.stack([inter, union]))
    assert boundary_iou_from_counts(counts)["boundary_miou"] == pytest.approx(expected)


def test_a_one_pixel_shift_costs_boundary_iou_much_more_than_miou():
    labels = _scene(np.random.default_rng(0))[None]
    clean = np.where(labels == 255, 0, labels)
    shifted = np.roll(clean, 1, axis=2)
    boundary = boundary_iou_from_counts(boundary_counts(labels, shifted, 3).numpy())["boundary_miou"]
    drop_boundary, drop_miou = 1.0 - boundary, 1.0 - miou(labels, shifted, 3)
    assert drop_boundary > 3 * drop_miou, (drop_boundary, drop_miou)


def test_band_width_follows_the_image_diagonal():
    """d = round(0.02 * diagonal): 1 px for a 40x30 image, 10 px for 400x300."""
    for h, w, d in ((30, 40, 1), (300, 400, 10)):
        mask = np.zeros((1, h, w), np.int32)
        mask[0, h // 4:3 * h // 4, w // 4:3 * w // 4] = 1
        counts = boundary_counts(mask, mask, 2).numpy()
        # The object's band: its area minus the (h/2 - 2d) x (w/2 - 2d) core.
        assert counts[1, 1] == (h // 2) * (w // 2) - (h // 2 - 2 * d) * (w // 2 - 2 * d)
