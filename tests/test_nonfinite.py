"""A non-finite loss stops training at its step with one line, and the last good backup is kept."""

import csv
import hashlib
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from exfuse_keras.data.shapes import generate_shapes_dataset
from exfuse_keras.training import run
from exfuse_keras.training.callbacks import AtomicModelCheckpoint, NonFiniteLossError, NonFiniteLossGuard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TRAINING_DATASET = run.training_dataset


def _checksums(folder):
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder))}


def _nan_batch_at(step):
    """Wraps ``run.training_dataset``: the batch of (0-based) global step ``step`` gets NaN images."""
    original = _TRAINING_DATASET

    def training_dataset(cfg, output_names, start_step, strategy):
        def poison(index, batch):
            images, targets = batch
            bad = tf.equal(index + start_step, step)
            return tf.where(bad, images * float("nan"), images), targets

        return original(cfg, output_names, start_step, strategy).enumerate().map(poison)

    return training_dataset


class _BackupChecksums(keras.callbacks.Callback):
    """After the last callback (BackupAndRestore) of each epoch: the backup folder's checksums."""

    def __init__(self, backup_dir, record):
        super().__init__()
        self.backup_dir, self.record = backup_dir, record

    def on_epoch_end(self, epoch, logs=None):
        self.record[epoch + 1] = _checksums(self.backup_dir)


def test_a_nan_batch_stops_at_its_step_keeps_the_last_good_backup_and_a_rerun_resumes(
        tmp_path, monkeypatch, capsys):
    data = tmp_path / "shapes"
    generate_shapes_dataset(str(data), num_train=16, num_val=4, size=64, seed=1, verbose=False)
    config = tmp_path / "run.yaml"
    config.write_text(f"""
base: {os.path.join(ROOT, "configs", "quickstart.yaml")}
model:
  backbone: {{base_channels: 8, stem_channels: 8}}
  gcn_kernel: 5
  ss: {{levels: [res3], channels: 8}}
data: {{root: {data}, crop_size: 64, shuffle_buffer: 16}}
train: {{batch_size: 2, val_batch_size: 4, epochs: 3, steps_per_epoch: 3, warmup_steps: 1, seed: 3,
         max_train_seconds: null}}
""")
    model_dir = tmp_path / "run"
    backup = str(model_dir / "backup")
    record = {}
    original_callbacks = run._callbacks
    monkeypatch.setattr(run, "_callbacks", lambda *a, **k: original_callbacks(*a, **k) + [
        _BackupChecksums(backup, record)])
    # Global step 5 (1-based): epoch 2, batch 2; epoch 1's backup is the last good one.
    monkeypatch.setattr(run, "training_dataset", _nan_batch_at(4))
    argv = ["--config", str(config), "--model-dir", str(model_dir)]

    assert run.main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    line = [x for x in err if x.startswith("error: ")]
    assert len(line) == 1, err
    line = line[0]
    assert "non-finite loss at global step 5 (epoch 2/3, batch 2/3)" in line, line
    for term in ("logits_loss=nan", "ecre_loss=nan", "ss_res3_loss=nan", "loss=nan"):
        assert term in line, line
    assert f"the last good backup {backup} (epoch 1, step 3) is kept" in line, line
    assert list(record) == [1], "no epoch may end after the NaN step"
    assert _checksums(backup) == record[1], "the backup must still be the last good epoch's"
    assert not os.path.exists(model_dir / "last.keras")
    assert len(open(model_dir / "history.csv").read().strip().splitlines()) == 1 + 1
    # steps.csv: epoch 1's window, then the good step before the NaN and the NaN step on its own.
    rows = list(csv.DictReader(open(model_dir / "steps.csv")))
    assert [(int(r["step"]), int(r["steps"])) for r in rows] == [(3, 3), (4, 1), (5, 1)]
    assert [np.isfinite(float(r["logits_loss"])) for r in rows] == [True, True, False]

    # Without the NaN batch, the same command resumes from the kept backup and finishes.
    monkeypatch.setattr(run, "training_dataset", _nan_batch_at(-1))
    assert run.main(argv) == 0
    assert "resuming from the backup" in capsys.readouterr().out
    assert sorted(record) == [1, 2, 3]
    rows = list(csv.DictReader(open(model_dir / "steps.csv")))  # the retrained steps' old rows gone
    assert [(int(r["step"]), int(r["steps"])) for r in rows] == [(3, 3), (6, 3), (9, 3)]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    model = keras.models.load_model(model_dir / "last.keras", compile=False)
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("policy, jit", [("float32", True), ("mixed_float16", True), ("mixed_float16", False)])
def test_the_guard_names_the_step_and_the_terms_under_xla_and_mixed_precision(tmp_path, policy, jit):
    keras.mixed_precision.set_global_policy(policy)
    try:
        image = keras.Input((4,), name="image")
        hidden = keras.layers.Dense(8, name="hidden")(image)
        model = keras.Model(image, {"logits": keras.layers.Dense(3, dtype="float32", name="logits")(hidden),
                                    "aux": keras.layers.Dense(3, dtype="float32", name="aux")(image)})
        model.compile("sgd", loss={"logits": "mse", "aux": "mse"}, jit_compile=jit)
        x = np.ones((12, 4), np.float32)
        y = {"logits": np.zeros((12, 3), np.float32), "aux": np.zeros((12, 3), np.float32)}
        y["logits"][6] = np.nan  # in batch 4 of size 2 (global step 4): only the "logits" term is NaN
        model.fit(x[:2], {k: v[:2] for k, v in y.items()}, verbose=0)  # builds; not a step of the run below
        model.optimizer.iterations.assign(0)
        guard = NonFiniteLossGuard(str(tmp_path / "backup"))
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        best = AtomicModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss", save_best_only=False)
        with pytest.raises(NonFiniteLossError) as failure:
            model.fit(x, y, batch_size=2, epochs=2, steps_per_epoch=3, shuffle=False, verbose=0,
                      callbacks=[guard, best, backup])
        message = str(failure.value)
        assert "\n" not in message
        assert "global step 4 (epoch 2/2, batch 1/3)" in message, message
        assert "logits_loss=" in message and "aux_loss" not in message, message
        assert "(epoch 1, step 3) is kept" in message, message
        assert guard.failed_step == 4
        assert keras.models.load_model(tmp_path / "best.keras", compile=False) is not None
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_the_checkpoint_never_saves_a_non_finite_epoch(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = AtomicModelCheckpoint(str(tmp_path / "last.keras"))
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": float("nan")})
    assert not os.path.exists(tmp_path / "last.keras")
    checkpoint.on_epoch_end(1, {"loss": 1.0})
    assert os.path.isfile(tmp_path / "last.keras")
    assert [name for name in os.listdir(tmp_path) if "partial" in name] == []
