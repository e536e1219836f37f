"""Training callbacks beyond Keras' own: learning rate and throughput in the logs, image
summaries for TensorBoard, and a wall-clock budget."""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from exfuse_keras.data.palette import colorize


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
