"""Losses, the streaming mIoU and the optimiser against hand computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from exfuse_keras.config import config_from_dict
from exfuse_keras.losses import (ClassPresenceLoss, ECRECrossEntropy, SegmentationCrossEntropy, build_losses,
                                 class_presence)
from exfuse_keras.metrics import StreamingMeanIoU, confusion_matrix, scores_from_confusion
from exfuse_keras.model import build_model
from exfuse_keras.training.optim import PolyWithWarmup, build_optimizer, learning_rate_clock
from tests.helpers import tiny_config_dict


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _numpy_ce(labels, logits, ignore=255, weights=None):
    valid = labels != ignore
    safe = np.where(valid, labels, 0)
    nll = -np.take_along_axis(_log_softmax(logits.astype(np.float64)), safe[..., None], -1)[..., 0]
    w = valid.astype(np.float64) * (1.0 if weights is None else np.asarray(weights)[safe])
    return (nll * w).sum() / valid.sum(), nll, valid


def test_cross_entropy_over_valid_pixels(rng):
    logits = rng.standard_normal((2, 8, 8, 4)).astype("float32") * 3
    labels = rng.integers(0, 4, (2, 8, 8))
    labels[0, :3] = 255
    expected, _, _ = _numpy_ce(labels, logits)
    got = SegmentationCrossEntropy(4)(labels, logits).numpy()
    assert got == pytest.approx(expected, rel=1e-5)
    weights = [1.0, 2.0, 0.5, 3.0]
    got_w = SegmentationCrossEntropy(4, class_weights=weights)(labels, logits).numpy()
    assert got_w == pytest.approx(_numpy_ce(labels, logits, weights=weights)[0], rel=1e-5)


def test_ohem_keeps_the_hardest_pixels(rng):
    logits = rng.standard_normal((1, 8, 8, 3)).astype("float32") * 3
    labels = rng.integers(0, 3, (1, 8, 8))
    labels[0, 0] = 255
    full, nll, valid = _numpy_ce(labels, logits)
    assert SegmentationCrossEntropy(3, ohem_fraction=1.0)(labels, logits).numpy() == pytest.approx(full, rel=1e-5)
    hardest = np.sort(nll[valid])[::-1][: int(valid.sum() * 0.25)]
    got = SegmentationCrossEntropy(3, ohem_fraction=0.25)(labels, logits).numpy()
    assert got == pytest.approx(hardest.mean(), rel=1e-5)


def test_ecre_loss_uses_labels_downsampled_nearest(rng):
    # Labels constant over 16x16 blocks: the block value is the only right nearest sample.
    blocks = rng.integers(0, 5, (2, 3, 4))
    labels = np.kron(blocks, np.ones((16, 16), int))
    labels[0, :16, :16] = 255
    logits = rng.standard_normal((2, 3, 4, 5)).astype("float32")
    small = blocks.copy()
    small[0, 0, 0] = 255
    got = SegmentationCrossEntropy(5)(labels, logits).numpy()
    assert got == pytest.approx(_numpy_ce(small, logits)[0], rel=1e-5)


def test_ecre_soft_targets_are_the_class_shares_of_each_cell(rng):
    """target "soft": -sum_c q_c log p_c per 16x16 cell, q the cell's class shares among its valid
    pixels (a numpy area average of the one-hot labels), over cells with a valid pixel."""
    labels = rng.integers(0, 4, (2, 32, 48))
    labels[0, :16, :16] = 255                 # one cell wholly ignored: left out
    labels[1, :8] = 255                       # half of each top cell ignored: out of the shares
    logits = rng.standard_normal((2, 2, 3, 4)).astype("float32") * 2
    one_hot = np.eye(4)[np.where(labels == 255, 0, labels)] * (labels != 255)[..., None]
    sums = one_hot.reshape(2, 2, 16, 3, 16, 4).sum(axis=(2, 4))
    counts = sums.sum(-1)
    shares = sums / np.maximum(counts, 1)[..., None]
    per_cell = -(shares * _log_softmax(logits.astype(np.float64))).sum(-1)
    expected = per_cell[counts > 0].mean()
    assert (counts == 0).sum() == 1
    got = ECRECrossEntropy(4, target="soft")(labels, logits).numpy()
    assert got == pytest.approx(expected, rel=1e-5)
    # Cells of one class: the soft target is the nearest label's one-hot.
    blocks = rng.integers(0, 4, (2, 2, 3))
    flat = np.kron(blocks, np.ones((16, 16), int))
    assert ECRECrossEntropy(4, target="soft")(flat, logits).numpy() == pytest.approx(
        ECRECrossEntropy(4, target="nearest")(flat, logits).numpy(), rel=1e-5)


def test_ecre_upsampled_target_scores_the_logits_resized_to_the_labels(rng):
    labels = rng.integers(0, 3, (1, 32, 32))
    labels[0, :4] = 255
    logits = rng.standard_normal((1, 2, 2, 3)).astype("float32")
    # Bilinear 2x2 -> 32x32 with half-pixel centres, computed independently.
    centres = (np.arange(32) + 0.5) / 16 - 0.5
    lo = np.clip(np.floor(centres).astype(int), 0, 1)
    frac = np.clip(centres - lo, 0, 1) * (centres > 0)
    hi = np.minimum(lo + 1, 1)
    rows = logits[0][lo] * (1 - frac)[:, None, None] + logits[0][hi] * frac[:, None, None]
    full = rows[:, lo] * (1 - frac)[None, :, None] + rows[:, hi] * frac[None, :, None]
    expected = _numpy_ce(labels, full[None])[0]
    got = ECRECrossEntropy(3, target="upsampled")(labels, logits).numpy()
    assert got == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="target"):
        ECRECrossEntropy(3, target="area")


def test_class_presence_loss(rng):
    labels = np.zeros((2, 4, 4), int)
    labels[0, 0, 0] = 2
    labels[1] = 255
    labels[1, 1, 1] = 3
    targets = class_presence(labels, 4).numpy()
    np.testing.assert_array_equal(targets, [[1, 0, 1, 0], [0, 0, 0, 1]])
    logits = rng.standard_normal((2, 4)).astype("float32")
    p = 1 / (1 + np.exp(-logits))
    expected = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean()
    assert ClassPresenceLoss(4)(labels, logits).numpy() == pytest.approx(expected, rel=1e-5)
    # An image with no labelled pixel (a last batch's filler) is left out of the mean.
    filled = np.concatenate([labels, np.full((1, 4, 4), 255)])
    filled_logits = np.concatenate([logits, rng.standard_normal((1, 4)).astype("float32")])
    assert ClassPresenceLoss(4)(filled, filled_logits).numpy() == pytest.approx(expected, rel=1e-5)


def test_losses_follow_the_outputs():
    cfg = config_from_dict(tiny_config_dict())
    losses, weights = build_losses(cfg, ["logits", "ecre", "ss_res2"])
    assert set(losses) == {"logits", "ecre", "ss_res2"} and weights["ss_res2"] == cfg.train.ss_loss_weight
    off = config_from_dict(tiny_config_dict(ecre={"enabled": True, "supervised": False}, ss={"levels": []}))
    outputs = list(build_model(off).output.keys())
    assert list(build_losses(off, outputs)[0]) == ["logits"]


def _numpy_confusion(labels, predictions, num_classes, ignore=255):
    valid = labels != ignore
    return np.bincount(labels[valid] * num_classes + predictions[valid],
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


def test_streaming_miou_against_numpy_bincount(rng):
    metric = StreamingMeanIoU(6)
    total = np.zeros((6, 6))
    for _ in range(3):
        labels = rng.integers(0, 5, (2, 9, 7))  # class 5 never in the ground truth
        labels[rng.random(labels.shape) < 0.2] = 255
        logits = rng.standard_normal((2, 9, 7, 6)).astype("float32")
        logits[..., 4] -= 10  # class 4 never predicted
        metric.update_state(labels, logits)
        total += _numpy_confusion(labels, logits.argmax(-1), 6)
    np.testing.assert_array_equal(metric.matrix.numpy(), total)
    tp = np.diag(total)
    union = total.sum(0) + total.sum(1) - tp
    expected = np.mean(tp[union > 0] / union[union > 0])
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    assert scores_from_confusion(total)["miou"] == pytest.approx(expected, rel=1e-9)


def test_streaming_miou_agrees_with_keras_meaniou(rng):
    labels = rng.integers(0, 4, (3, 10, 10))
    labels[:, :2] = 255
    logits = rng.standard_normal((3, 10, 10, 4)).astype("float32")
    ours = StreamingMeanIoU(4)
    ours.update_state(labels, logits)
    reference = keras.metrics.MeanIoU(num_classes=4, ignore_class=255, sparse_y_pred=True)
    reference.update_state(labels, logits.argmax(-1))
    assert float(ours.result()) == pytest.approx(float(reference.result()), rel=1e-6)


def test_absent_classes_are_left_out_of_the_mean():
    matrix = confusion_matrix(tf.constant([0, 0, 1]), tf.constant([0, 0, 1]), 4).numpy()
    scores = scores_from_confusion(matrix)
    assert scores["miou"] == 1.0 and np.isnan(scores["iou"][2:]).all()


def test_poly_schedule_with_warmup():
    schedule = PolyWithWarmup(0.1, total_steps=110, warmup_steps=10, power=0.9)
    values = {step: float(schedule(step)) for step in (0, 5, 10, 60, 110, 200)}
    assert values[0] == 0.0 and values[5] == pytest.approx(0.05)
    assert values[10] == pytest.approx(0.1)
    assert values[60] == pytest.approx(0.1 * 0.5 ** 0.9, rel=1e-6)
    assert values[110] == 0.0 and values[200] == 0.0
    assert PolyWithWarmup.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_a_time_budget_drives_the_schedule_by_whichever_of_steps_and_time_is_ahead(monkeypatch):
    """budget_mode: anneal. The clock is what TimeBudget sets from the elapsed fraction of the
    budget; the learning rate is the poly formula at max(step, clock)."""
    from types import SimpleNamespace

    from exfuse_keras.training import callbacks

    def poly(t):  # the formula, for peak 0.1, 10 warm-up steps, 110 in all
        return 0.1 * t / 10 if t < 10 else 0.1 * (1 - (t - 10) / 100) ** 0.9

    train = {"max_train_seconds": 50, "budget_mode": "anneal", "warmup_steps": 10, "learning_rate": 0.1,
             "batch_size": 16, "reference_batch_size": 16, "epochs": 11, "steps_per_epoch": 10}
    cfg = config_from_dict({**tiny_config_dict(), "train": train})
    clock = learning_rate_clock(cfg)
    optimizer = build_optimizer(cfg, total_steps=110, clock=clock)
    budget = callbacks.TimeBudget(50, clock, total_steps=110)
    model = SimpleNamespace(stop_training=False)
    budget.set_model(model)
    now = [1000.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    budget.on_train_begin()
    budget.on_train_batch_begin(0)  # the first step (tracing) runs on the step schedule
    assert float(clock) == 0.0 and float(optimizer.learning_rate) == 0.0
    now[0] = 1010.0  # it took 10 s: the clock spans the 40 s left
    budget.on_train_batch_end(0)
    for elapsed, step, expected_clock in ((0, 1, 0.0), (4, 40, 11.0), (24, 40, 66.0), (24, 90, 66.0)):
        now[0] = 1010.0 + elapsed
        optimizer.iterations.assign(step)
        budget.on_train_batch_begin(0)
        assert float(clock) == pytest.approx(expected_clock)
        assert float(optimizer.learning_rate) == pytest.approx(poly(max(step, expected_clock)), abs=1e-7)
        budget.on_train_batch_end(0)
        assert not model.stop_training
    now[0] = 1051.0  # 51 s after the start of training
    budget.on_train_batch_begin(0)
    assert float(clock) == 110 and float(optimizer.learning_rate) == 0.0
    budget.on_train_batch_end(0)
    assert model.stop_training and budget.stopped_early
    # budget_mode: stop (the default) keeps a step-driven schedule; so does a reloaded one.
    assert learning_rate_clock(config_from_dict({**tiny_config_dict(), "train": {"max_train_seconds": 50}})) is None
    assert learning_rate_clock(config_from_dict({**tiny_config_dict(), "train": {"budget_mode": "anneal"}})) is None
    assert "clock" not in PolyWithWarmup(0.1, 110, 10, clock=clock).get_config()


def test_learning_rate_scales_with_global_batch_and_decay_skips_bn_and_bias():
    cfg = config_from_dict({**tiny_config_dict(), "train": {"batch_size": 32, "reference_batch_size": 16,
                                                             "learning_rate": 0.01, "warmup_steps": 0}})
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, total_steps=100)
    assert float(optimizer.learning_rate) == pytest.approx(0.02)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert decayed, "kernels are decayed"
    for variable in model.trainable_variables:
        name = variable.path.rsplit("/", 1)[-1]
        assert (variable.path in decayed) == (name not in ("bias", "gamma", "beta")), variable.path


def test_losses_and_metric_compile_with_xla_and_match_the_plain_step(rng):
    """jit_compile (the GPU default) must compile every head's loss and the mIoU: no tf.cond with
    differently shaped branches (ECRE's downsampled labels), no boolean_mask + bincount."""
    from exfuse_keras.training.run import build_training_model

    cfg = config_from_dict({**tiny_config_dict(), "train": {"batch_size": 2, "warmup_steps": 0}})
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    mask = rng.integers(0, 5, (2, 64, 64)).astype("int32")
    mask[0, :10] = 255
    results = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = build_training_model(cfg, jit_compile=jit)
        targets = {name: mask for name in model.output}
        results[jit] = model.test_on_batch(images, targets, return_dict=True)
    for key, value in results[False].items():
        assert results[True][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # the metric under XLA counts what numpy counts
    logits = model(images, training=False)["logits"].numpy()
    expected = scores_from_confusion(np.bincount(
        (mask[mask != 255] * 5 + logits.argmax(-1)[mask != 255]), minlength=25).reshape(5, 5))["miou"]
    assert results[True]["logits_miou"] == pytest.approx(expected, abs=1e-5)
