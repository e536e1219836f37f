"""Two small fixes that make Keras 3.15's ``model.fit`` work under tf.distribute strategies.

Both are in Keras' TensorFlow trainer (``keras/src/backend/tensorflow/trainer.py``), seen with
MultiWorkerMirroredStrategy (two workers on 127.0.0.1; docs/training.md, "Several hosts"):

1. **Symbolic build.** Under any strategy, ``fit`` first takes one batch from the training
   iterator to build the model, the compiled loss and metrics and the optimizer
   (``_maybe_symbolic_build``). Under MultiWorkerMirroredStrategy it reduces that (nested)
   batch with ``strategy.reduce`` and fails with "Attempt to convert a value (PerReplica...)".
   Under every strategy the batch it read is then missing from training: the first step of
   each ``fit`` call sees the second batch, so a resumed run would not see the batches of an
   uninterrupted one. ``build_before_fit`` builds everything from the dataset's
   ``element_spec`` (no data read), and makes ``fit`` skip its own build when nothing is left
   to build.
2. **Reducing logs.** After each step, Keras reduces the per-replica logs with
   ``strategy.reduce("MEAN", v, axis=0)`` in multi-worker mode; the logs are scalars, so this
   fails with "Invalid reduction dimension 0". ``patch_log_reduction`` reduces scalars with
   ``axis=None`` (the mean over replicas, as Keras does for one worker) and leaves everything
   else to Keras.

Both are checked by tests/test_training.py (a two-process MultiWorkerMirroredStrategy run
against a single process fed the same global batches, and the replica-invariance test).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer


def fully_built(model: keras.Model) -> bool:
    """Whether the model's layers, compiled loss and metrics and optimizer all exist."""
    return (all(layer.built for layer in model._flatten_layers())
            and (model._compile_metrics is None or model._compile_metrics.built)
            and (model._compile_loss is None or model._compile_loss.built)
            and (model.optimizer is None or model.optimizer.built))


def build_before_fit(model: keras.Model, element_spec) -> None:
    """Builds ``model`` (compiled) from ``element_spec`` of its ``(x, y)`` dataset, then stops
    ``fit`` from reading a batch to build it. Call inside the strategy's scope, after compile.

    Args:
        model: a compiled model.
        element_spec: ``dataset.element_spec`` of the per-replica (or undistributed) dataset.
    """
    symbolic = tf.nest.map_structure(
        lambda spec: keras.KerasTensor(tuple(spec.shape), dtype=spec.dtype.name), element_spec)
    model._symbolic_build(data_batch=symbolic)
    original = model._maybe_symbolic_build

    def _maybe_symbolic_build(iterator=None, data_batch=None):
        if fully_built(model):
            return None
        return original(iterator=iterator, data_batch=data_batch)

    model._maybe_symbolic_build = _maybe_symbolic_build


def _is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()


def _rank(value, strategy):
    if isinstance(value, tf.distribute.DistributedValues):
        value = strategy.experimental_local_results(value)[0]
    shape = getattr(value, "shape", None)
    return None if shape is None else shape.rank


_original_reduce_per_replica = tf_trainer.reduce_per_replica


def _reduce_per_replica(values, strategy, reduction):
    if reduction not in ("auto", "mean") or not _is_multi_worker(strategy):
        return _original_reduce_per_replica(values, strategy, reduction)

    def reduce(value):
        if _rank(value, strategy) == 0:
            return strategy.reduce("MEAN", value, axis=None)
        return _original_reduce_per_replica(value, strategy, reduction)

    return tf.nest.map_structure(reduce, values)


def patch_log_reduction() -> None:
    """Installs the scalar-log reduction fix (idempotent; changes nothing outside multi-worker mode)."""
    tf_trainer.reduce_per_replica = _reduce_per_replica
