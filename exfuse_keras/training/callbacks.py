"""Training callbacks beyond Keras' own: learning rate and throughput in the logs, image
summaries for TensorBoard, a wall-clock budget, a stop at the first non-finite loss that keeps
the last good backup, and checkpoints and backups written atomically."""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from exfuse_keras.data.palette import colorize


class NonFiniteLossError(RuntimeError):
    """Training met a NaN or Inf loss; the message (one line) names the step, the loss terms and
    the backup a rerun resumes from."""


def _is_loss_key(key: str) -> bool:
    return (key == "loss" or key.endswith("_loss")) and not key.startswith("val_")


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first step whose loss, or any per-output loss term (``logits_loss``,
    ``ecre_loss``, ``ss_res2_loss`` ...), is NaN or Inf, by raising ``NonFiniteLossError``.

    Put it before every callback that saves (only ``StepLossLog``, which logs, comes before it in
    train.py). It raises in ``on_train_batch_end`` of the bad step, so
    ``fit`` ends there: the epoch never ends, so neither ``BackupAndRestore`` (which saves at
    epoch end) nor ``ModelCheckpoint`` writes the non-finite state, and the backup of the last
    good epoch stays as it was. (``keras.callbacks.TerminateOnNaN`` only sets ``stop_training``:
    ``fit`` then still ends the epoch, saving the NaN weights as the backup, and then ends as a
    finished run, whereupon ``BackupAndRestore`` deletes its backup.) The logs it reads are the step's outputs of the train function, so it works the
    same with XLA (``jit_compile``) and mixed precision (the logged losses are unscaled float32:
    a gradient overflow the loss scale absorbs is not a non-finite loss). Keras' logged losses
    are running means over the epoch, which turn non-finite at the first non-finite step and
    stay so: the first step seen non-finite is the bad one, and so are the terms named.

    Args:
        backup_dir: the run's ``BackupAndRestore`` folder, named in the message with the epochs
            it holds.
    """

    def __init__(self, backup_dir: str | None = None):
        super().__init__()
        self.backup_dir = backup_dir
        self._epoch = 0
        self.failed_step = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not logs:
            return
        bad = {}
        for key, value in logs.items():
            if _is_loss_key(key):
                value = np.asarray(keras.ops.convert_to_numpy(value), np.float64)
                if not np.all(np.isfinite(value)):
                    bad[key] = float(value.reshape(-1)[~np.isfinite(value.reshape(-1))][0])
        if bad:
            raise NonFiniteLossError(self._message(batch, bad))

    def _message(self, batch: int, bad: dict) -> str:
        steps = (self.params or {}).get("steps") or 0
        epochs = (self.params or {}).get("epochs")
        step = self._epoch * steps + batch + 1
        self.failed_step = step
        per_execution = int(getattr(self.model, "steps_per_execution", 1) or 1) if self.model is not None else 1
        where = f"step {step}" if per_execution == 1 else f"one of steps {step - per_execution + 1}-{step}"
        terms = sorted(bad, key=lambda key: (key == "loss", key))
        named = ", ".join(f"{key}={bad[key]}" for key in terms)
        return (f"non-finite loss at global {where} (epoch {self._epoch + 1}{f'/{epochs}' if epochs else ''}, "
                f"batch {batch + 1}{f'/{steps}' if steps else ''}): {named}; training stopped before "
                f"anything was saved; {self._backup_note(steps)}")

    def _backup_note(self, steps: int) -> str:
        if not self.backup_dir:
            return "no backup configured"
        from exfuse_keras.training.rundir import completed_epochs

        try:
            done = completed_epochs(self.backup_dir)
        except (OSError, ValueError, KeyError):
            done = 0
        if not done:
            return f"no backup of a finished epoch in {self.backup_dir} yet: a rerun starts from step 0"
        return (f"the last good backup {self.backup_dir} (epoch {done}, step {done * steps}) is kept: fix the "
                f"cause (a bad batch, a too-high learning rate, float16 overflow) and rerun the same command to "
                f"resume from it")


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``keras.callbacks.ModelCheckpoint`` that writes through ``exfuse_keras.atomic.atomic_path``
    (a kill while saving leaves the previous ``best.keras``), and never saves a model whose epoch
    logs have a non-finite loss."""

    def _save_model(self, epoch, batch, logs):
        import os

        from exfuse_keras.atomic import atomic_path

        for key, value in (logs or {}).items():
            if _is_loss_key(key) and not np.all(np.isfinite(np.asarray(keras.ops.convert_to_numpy(value)))):
                return
        filepath = self._get_file_path(epoch, batch, logs)
        if os.path.isdir(filepath):
            raise IOError(f"ModelCheckpoint: {filepath} is a folder; expected a file path")
        if self._should_save_model(epoch, batch, logs, filepath):
            with atomic_path(filepath) as tmp:
                if self.save_weights_only:
                    self.model.save_weights(tmp, overwrite=True)
                else:
                    self.model.save(tmp, overwrite=True)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` whose backup folder is replaced as a whole, and kept
    when ``fit`` ends.

    Keras writes ``latest.weights.h5`` and then ``training_metadata.json`` in place: a kill
    between the two left the new epoch's weights with the previous epoch's number (a resumed
    run replayed that epoch on already-updated weights, silently), and a kill inside the HDF5
    write left a file that does not load. Here both go to a sibling folder
    (``backup.partial-<pid>``, ``exfuse_keras.atomic.atomic_path``) swapped with the backup
    folder in one step, so a kill at any moment leaves the previous complete backup or the new
    one. Restoring is Keras's own (the same two files, at epoch granularity).

    Keras also deletes the backup at the end of ``fit``, before train.py has written
    ``last.keras``: a kill between the two lost the whole run. This callback keeps it; the
    caller deletes it (``exfuse_keras.atomic.atomic_remove``) once the final model is written.
    """

    def __init__(self, backup_dir: str, save_freq="epoch"):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)

    def _save_model(self):
        import json
        import os

        from exfuse_keras.atomic import atomic_path

        with atomic_path(self.backup_dir, directory=True) as tmp:
            os.makedirs(tmp)
            self.model.save_weights(os.path.join(tmp, os.path.basename(self._weights_path)), overwrite=True)
            with open(os.path.join(tmp, os.path.basename(self._training_metadata_path)), "w",
                      encoding="utf-8") as f:
                json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``lr`` (the schedule's value at the current step) to each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            optimizer = self.model.optimizer
            logs["lr"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class Throughput(keras.callbacks.Callback):
    """Adds ``steps_per_sec`` and ``images_per_sec`` of the epoch's training steps to its logs."""

    def __init__(self, global_batch: int):
        super().__init__()
        self.global_batch = global_batch
        self._start = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = None, 0

    def on_train_batch_end(self, batch, logs=None):
        # Time from the end of the epoch's first step, which may include tracing.
        if self._start is None:
            self._start = time.perf_counter()
        else:
            self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._steps:
            rate = self._steps / (time.perf_counter() - self._start)
            logs["steps_per_sec"] = rate
            logs["images_per_sec"] = rate * self.global_batch


class StepLossLog(keras.callbacks.Callback):
    """Every ``every`` steps, the mean of each training loss (``loss``, ``logits_loss``,
    ``ecre_loss`` ...) over the steps since the last point, appended to ``csv_path`` (columns
    ``step``, ``steps``, ``lr``, then the losses) and written to TensorBoard under ``log_dir``.

    Keras' batch logs hold each loss's running mean since the epoch began, m_n after n steps, so
    the mean over steps a+1 .. n is (n m_n - a m_a) / (n - a) (up to float32 rounding), where an
    epoch-level log shows one number per epoch and the running mean dilutes a spike. Points fall
    where the optimizer's step count (so a resumed run continues the axis) reaches a multiple of
    ``every``, and at each epoch's end, so every step is in exactly one window. A step with a
    non-finite loss gets a row of its own after the window before it (put this callback before
    ``NonFiniteLossGuard``, which stops training there). ``lr`` is the rate of the next step.
    """

    def __init__(self, every: int, csv_path: str, log_dir: str):
        super().__init__()
        self.every, self.csv_path, self.log_dir = every, csv_path, log_dir
        self._writer, self._columns, self._point = None, None, None
        self._written = (0, {})  # (steps into the epoch, running means) at the last point
        self._latest = None  # (steps into the epoch, step count, running means) after the last step

    def on_train_begin(self, logs=None):
        self._writer, self._point = tf.summary.create_file_writer(self.log_dir), None

    def on_train_batch_begin(self, batch, logs=None):
        if self._point is None:
            # After every on_train_begin, so after BackupAndRestore restored the step count.
            self._point = self._step()
            self._trim(self._point)

    def _step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _trim(self, done: int) -> None:
        """A run resumed from its last backup trains again the steps after it (``done``): the rows
        a killed run wrote for them go (TensorBoard keeps its points; steps.csv is the record)."""
        from exfuse_keras.training.rundir import truncate_history

        truncate_history(self.csv_path, done + 1)

    def on_epoch_begin(self, epoch, logs=None):
        self._written, self._latest = (0, {}), None

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        running = {k: float(v) for k, v in (logs or {}).items() if _is_loss_key(k)}
        if not all(np.isfinite(v) for v in running.values()):
            if self._latest is not None and self._latest[0] > self._written[0]:
                self._write(*self._latest)
            self._write(batch + 1, step, running)
            return
        self._latest = (batch + 1, step, running)
        # The count may repeat (a loss-scale optimizer skips overflowing steps): one point per multiple.
        if step // self.every > self._point // self.every:
            self._write(*self._latest)

    def on_epoch_end(self, epoch, logs=None):
        if self._latest is not None and self._latest[0] > self._written[0]:
            self._write(*self._latest)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()

    def _write(self, n: int, step: int, running: dict) -> None:
        import csv
        import os

        start, before = self._written
        window = n - start
        means = {k: (n * v - start * before.get(k, 0.0)) / window for k, v in running.items()}
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self._written, self._point = (n, running), step
        if self._columns is None:
            self._columns = sorted(means)
        fresh = not os.path.isfile(self.csv_path)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            if fresh:
                out.writerow(["step", "steps", "lr", *self._columns])
            out.writerow([step, window, f"{lr:.6g}", *(f"{means[k]:.7g}" if k in means else "" for k in self._columns)])
        if self._writer is not None:
            with self._writer.as_default(step=step):
                for key, value in means.items():
                    tf.summary.scalar(key, value)
                tf.summary.scalar("lr", lr)
            self._writer.flush()


class EpochTimeEstimate(keras.callbacks.Callback):
    """Prints, once, the time per epoch and for the whole run measured on the first ``steps``
    steps after the first (which traces the graph): what a user wants to know before waiting.

    Args:
        steps_per_epoch, epochs: the run's schedule (``epochs`` counts those left to train).
        steps: steps measured.
        log: where the line goes (``print``).
    """

    def __init__(self, steps_per_epoch: int, epochs: int, steps: int = 20, log=print):
        super().__init__()
        self.steps_per_epoch, self.epochs, self.steps, self.log = steps_per_epoch, epochs, steps, log
        self._start, self._seen, self.seconds_per_step = None, 0, None

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds_per_step is not None:
            return
        if self._start is None:
            self._start = time.perf_counter()
            return
        self._seen += 1
        if self._seen == min(self.steps, self.steps_per_epoch - 1):
            self.seconds_per_step = (time.perf_counter() - self._start) / self._seen
            epoch = self.seconds_per_step * self.steps_per_epoch
            self.log(f"\ntime: {self.seconds_per_step:.3f} s per step over {self._seen} steps: about "
                     f"{_duration(epoch)} per epoch of {self.steps_per_epoch} steps, "
                     f"{_duration(epoch * self.epochs)} for the {self.epochs} epoch(s) to go (validation not included)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class TimeBudget(keras.callbacks.Callback):
    """Stops training once ``seconds`` of wall-clock time have passed since ``on_train_begin``.

    With a ``clock`` (see ``PolyWithWarmup``), it also sets the clock before every step to the
    step the elapsed time corresponds to, so the learning-rate schedule reaches its end when the
    budget does, whichever comes first. The clock starts when the first step ends and spans
    the rest of the budget: the first step's tracing (seconds) would otherwise count as steps
    already run and cut the warm-up short, so a budget that never binds would still change the
    run. The budget counts this process's time: a resumed run gets a fresh one.
    """

    def __init__(self, seconds: float, clock=None, total_steps: int | None = None):
        super().__init__()
        if clock is not None and not total_steps:
            raise ValueError("TimeBudget: a clock needs total_steps")
        self.seconds = seconds
        self.clock = clock
        self.total_steps = total_steps
        self._start = None
        self._clock_start = None
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        self._clock_start = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.clock is not None and self._clock_start is not None:
            left = self.seconds - (self._clock_start - self._start)
            fraction = (time.perf_counter() - self._clock_start) / left if left > 0 else 1.0
            self.clock.assign(min(fraction, 1.0) * self.total_steps)

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._clock_start is None:
            self._clock_start = now
        if now - self._start > self.seconds:
            self.model.stop_training = True
            self.stopped_early = True


def time_budget(cfg, clock=None) -> list:
    """``[TimeBudget]`` for ``train.max_train_seconds`` (advancing ``clock`` when given), or ``[]``."""
    if not cfg.train.max_train_seconds:
        return []
    return [TimeBudget(cfg.train.max_train_seconds, clock, cfg.train.epochs * cfg.train.steps_per_epoch)]


class ImageSummary(keras.callbacks.Callback):
    """Writes input, ground truth and prediction (colourised) for a few images to TensorBoard.

    Args:
        log_dir: TensorBoard folder (images go to ``<log_dir>/images``).
        images: float ``[N, H, W, 3]`` RGB 0..255.
        masks: int ``[N, H, W]`` with the ignore label.
        palette: ``[K, 3]`` uint8 colours of the classes.
    """

    def __init__(self, log_dir: str, images: np.ndarray, masks: np.ndarray, palette: np.ndarray):
        super().__init__()
        self.images = images
        self.masks = masks
        self.palette = palette
        self.writer = tf.summary.create_file_writer(f"{log_dir}/images")

    def on_epoch_end(self, epoch, logs=None):
        logits = self.model.predict(self.images, verbose=0)["logits"]
        prediction = np.argmax(logits, axis=-1).astype(np.uint8)
        truth = np.stack([colorize(m.astype(np.uint8), self.palette) for m in self.masks])
        predicted = np.stack([colorize(p, self.palette) for p in prediction])
        with self.writer.as_default(step=epoch):
            tf.summary.image("input", self.images.astype(np.uint8), max_outputs=len(self.images))
            tf.summary.image("ground_truth", truth, max_outputs=len(self.images))
            tf.summary.image("prediction", predicted, max_outputs=len(self.images))
        self.writer.flush()
