"""steps.csv: each loss's mean over every ``train.log_every_steps`` steps, recovered exactly from
Keras' running means, on global steps, and trimmed on resume."""

import csv
import glob
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from exfuse_keras.config import ConfigError, load_config_stack
from exfuse_keras.training.callbacks import StepLossLog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Optimizer:
    def __init__(self, iterations=0):
        self.iterations = tf.Variable(iterations, dtype=tf.int64)
        self.learning_rate = tf.Variable(0.01)


def _drive(callback, losses_per_epoch, start_step=0):
    """Feeds ``callback`` the logs Keras gives: after each step, every loss's running mean since
    its epoch began (in float32, as the Mean metric keeps it), and a non-loss metric."""
    optimizer = _Optimizer(0)
    callback.set_model(types.SimpleNamespace(optimizer=optimizer))
    callback.on_train_begin()
    optimizer.iterations.assign(start_step)  # BackupAndRestore, a later callback, restores the step count
    for epoch, losses in enumerate(losses_per_epoch):
        callback.on_epoch_begin(epoch)
        total = np.float32(0)
        for batch, loss in enumerate(losses):
            callback.on_train_batch_begin(batch)
            optimizer.iterations.assign_add(1)
            total = np.float32(total + np.float32(loss))
            running = float(total / np.float32(batch + 1))
            callback.on_train_batch_end(batch, {"loss": running, "logits_loss": running / 2, "miou": 0.5,
                                                "val_loss": 9.0})
        callback.on_epoch_end(epoch, {})
    callback.on_train_end()


def test_each_window_is_the_mean_of_its_steps_and_every_step_is_in_one_window(tmp_path):
    rng = np.random.default_rng(0)
    # Epochs of 250 steps with a spike at steps 131-140 of the first: the epoch's mean hides where it was.
    epochs = [rng.uniform(0.5, 1.5, 250), rng.uniform(0.2, 0.8, 250)]
    epochs[0][130:140] = 40.0
    path = str(tmp_path / "steps.csv")
    _drive(StepLossLog(100, path, str(tmp_path / "logs")), epochs)

    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == ["step", "steps", "lr", "logits_loss", "loss"]  # losses only
    assert [int(r["step"]) for r in rows] == [100, 200, 250, 300, 400, 500]
    assert [int(r["steps"]) for r in rows] == [100, 100, 50, 50, 100, 100]
    flat, edges = np.concatenate(epochs), [0, 100, 200, 250, 300, 400, 500]
    expected = [flat[a:b].mean() for a, b in zip(edges, edges[1:])]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], expected, rtol=1e-4)
    np.testing.assert_allclose([float(r["logits_loss"]) for r in rows], np.array(expected) / 2, rtol=1e-4)
    assert max(range(len(rows)), key=lambda i: float(rows[i]["loss"])) == 1  # the spike's window, steps 101-200
    assert float(rows[0]["lr"]) == pytest.approx(0.01)

    # The same points in TensorBoard, on the same global steps.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"tensors": 0})
    events.Reload()
    logged = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors("loss")]
    assert [s for s, _ in logged] == [100, 200, 250, 300, 400, 500]
    np.testing.assert_allclose([v for _, v in logged], expected, rtol=1e-4)


def test_a_resumed_run_drops_the_rows_of_the_steps_it_trains_again(tmp_path):
    path, logs = str(tmp_path / "steps.csv"), str(tmp_path / "logs")
    first = [np.full(40, 1.0), np.full(40, 2.0), np.full(30, 3.0)]  # killed 30 steps into epoch 3
    _drive(StepLossLog(20, path, logs), first)
    assert [int(r["step"]) for r in csv.DictReader(open(path))][-2:] == [100, 110]
    # The backup holds 2 epochs (80 steps): the run trains epoch 3 again, now with loss 5.
    _drive(StepLossLog(20, path, logs), [np.full(40, 5.0)], start_step=80)
    rows = list(csv.DictReader(open(path)))
    assert [int(r["step"]) for r in rows] == [20, 40, 60, 80, 100, 120]
    assert [float(r["loss"]) for r in rows] == pytest.approx([1, 1, 2, 2, 5, 5])
    assert len(glob.glob(os.path.join(logs, "events.out.tfevents.*"))) == 2


def test_a_repeated_step_count_gives_one_point_per_multiple(tmp_path):
    """A loss-scale optimizer does not count a step whose gradients overflowed: the count stays,
    and the next step, not a second row at the same count, closes the window."""
    path = str(tmp_path / "steps.csv")
    callback = StepLossLog(2, path, str(tmp_path / "logs"))
    optimizer = _Optimizer(0)
    callback.set_model(types.SimpleNamespace(optimizer=optimizer))
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    for batch, (count, running) in enumerate([(1, 1.0), (2, 1.0), (2, 2.0), (3, 2.0), (4, 2.0)]):
        callback.on_train_batch_begin(batch)
        optimizer.iterations.assign(count)
        callback.on_train_batch_end(batch, {"loss": running})
    callback.on_epoch_end(0)
    callback.on_train_end()
    rows = list(csv.DictReader(open(path)))
    assert [(int(r["step"]), int(r["steps"])) for r in rows] == [(2, 2), (4, 3)]
    assert [float(r["loss"]) for r in rows] == pytest.approx([1.0, (5 * 2.0 - 2 * 1.0) / 3], rel=1e-6)


def test_log_every_steps_must_be_positive_or_null(tmp_path):
    base = os.path.join(ROOT, "configs", "quickstart.yaml")
    assert load_config_stack([base]).train.log_every_steps == 100
    assert load_config_stack([base], ["train.log_every_steps=null"]).train.log_every_steps is None
    with pytest.raises(ConfigError, match="train.log_every_steps"):
        load_config_stack([base], ["train.log_every_steps=0"])
