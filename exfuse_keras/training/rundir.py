"""A run directory's plumbing, shared by train.py (training/run.py) and pretrain.py (pretraining/ss.py).

- ``setup_run``: seeds, determinism, precision, strategy; the chief's folder with ``config.yaml``
  and ``versions.json``, a non-chief worker's own folder (``<model-dir>/.workers/worker_N``).
- Resume after a kill: ``resume`` (the epochs done, from the ``AtomicBackupAndRestore`` state in
  ``<run>/backup``; the temporaries a killed run left are deleted), ``logged_best`` (the score
  ``best.keras`` has) and ``resumed_training_data``, which replays the training stream from the
  resumed step.
- ``check_time_budget``: ``train.max_train_seconds`` is refused under multi-worker training
  (``callbacks.time_budget`` builds its callback).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from typing import Callable, Optional


def _git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_versions(path: str, **extra) -> dict:
    """Writes (and returns) Python, TensorFlow and Keras versions, the git commit, the platform
    and ``extra`` as JSON."""
    import keras
    import tensorflow as tf

    from exfuse_keras.atomic import atomic_write

    info = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "git_commit": _git_commit(), "platform": platform.platform(), **extra}
    atomic_write(path, json.dumps(info, indent=2))
    return info


# What a run writes in its folder, atomically (exfuse_keras.atomic): the temporaries of these a
# killed run left behind are deleted when the next run of that folder starts.
RUN_FILES = ("best.keras", "last.keras", "backup", "history.csv", "steps.csv", "config.yaml", "versions.json",
             "backbone.keras")


def resume(run_dir: str) -> int:
    """The epochs a previous, interrupted run of ``run_dir`` finished (0 for a new run); drops
    ``history.csv`` rows of later epochs, which the resumed run logs again, and the temporaries
    (``best.partial-<pid>.keras``, ``backup.partial-<pid>``) a killed run left."""
    from exfuse_keras.atomic import remove_stale

    for path in remove_stale(run_dir, RUN_FILES):
        print(f"removed {path}, left by a killed run")
    backup_dir = os.path.join(run_dir, "backup")
    epochs = completed_epochs(backup_dir)
    if epochs:
        print(f"resuming from the backup in {backup_dir}: {epochs} epochs done")
    truncate_history(os.path.join(run_dir, "history.csv"), epochs)
    return epochs


def completed_epochs(backup_dir: str) -> int:
    """Epochs a previous, interrupted run of this directory finished (0 for a new run).

    Reads the metadata Keras' BackupAndRestore writes, so the dataset can start at the same
    step that ``fit`` will resume from.
    """
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return int(json.load(f)["epoch"])


def truncate_history(path: str, epochs: int) -> None:
    """Drops CSV rows whose first column (the epoch in ``history.csv``, the step in ``steps.csv``)
    is >= ``epochs``: a killed run may have logged an epoch whose backup it did not finish (the
    first one included: ``epochs`` 0), and the resumed run logs that epoch again. A run started
    again after it finished (no backup) logs its epochs from the first."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(lines) <= 1:
        return
    from exfuse_keras.atomic import atomic_write

    kept = lines[:1] + [line for line in lines[1:] if line and int(line.split(",", 1)[0]) < epochs]
    if len(kept) < len(lines):
        atomic_write(path, "\n".join(kept) + "\n")


def logged_best(path: str, key: str) -> Optional[float]:
    """The largest finite ``key`` in the CSV history ``path``, or None.

    After ``resume`` the rows are the epochs the backup holds: a resumed run's checkpoint starts
    from this value, so ``best.keras`` is replaced only by a better epoch, as in the
    uninterrupted run (Keras' ``ModelCheckpoint`` would start from scratch and save the first
    resumed epoch whatever its score).
    """
    import csv
    import math

    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", newline="") as f:
        values = [float(row[key]) for row in csv.DictReader(f) if row.get(key)]
    finite = [value for value in values if math.isfinite(value)]
    return max(finite) if finite else None


def resumed_training_data(strategy, global_batch: int, start_step: int, examples: Callable,
                          dataset: Callable):
    """The training batches from global step ``start_step`` on, for ``strategy``.

    Data epochs (full passes, reshuffled per epoch by seed) are independent of fit's epochs
    (``steps_per_epoch`` steps); each input pipeline's stream starts at the data epoch and batch
    offset of ``start_step``, so a resumed run replays exactly the batches the lost one had.

    Args:
        strategy: the distribution strategy (several replicas or workers: one input pipeline
            each, through ``distribute_datasets_from_function``).
        global_batch: ``train.batch_size``.
        start_step: the global step training resumes from (0 for a new run).
        examples: ``input_context or None -> int``, the examples one data epoch gives that
            input pipeline.
        dataset: ``(epoch, input_context or None) -> tf.data.Dataset`` of (image, targets)
            batches repeating from data epoch ``epoch``.

    Raises:
        ValueError: an input pipeline's share is less than one batch.
    """
    import tensorflow as tf

    def dataset_fn(input_context: Optional[tf.distribute.InputContext] = None):
        batch = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
        total = examples(input_context)
        per_epoch = total // batch
        if per_epoch == 0:
            raise ValueError(f"data: the train split gives {total} examples per input pipeline, fewer than one "
                             f"batch of {batch}")
        epoch, offset = divmod(start_step, per_epoch)
        return dataset(epoch, input_context).skip(offset)

    if strategy.num_replicas_in_sync > 1 or isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return strategy.distribute_datasets_from_function(dataset_fn)
    return dataset_fn()


def check_time_budget(cfg, strategy) -> None:
    """A time budget ends each process at its own step: under MultiWorkerMirroredStrategy the
    workers would then wait for each other forever, so it is refused there."""
    import tensorflow as tf

    from exfuse_keras.config import ConfigError

    if cfg.train.max_train_seconds and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise ConfigError("train.max_train_seconds: not supported with the multi_worker strategy (each worker's "
                          "clock would end the run at a different step); use null and train.epochs")


def check_jit_compile(jit: bool, strategy, has_gpu: bool) -> None:
    """XLA with several replicas on CPU devices is refused in one line: measured here, every
    compiled step then fails with "Trying to access resource ... located in device CPU:1 from
    device CPU:0" (XLA's known issue "tf.Variable on a different device"), in float32 and under
    mixed precision alike."""
    from exfuse_keras.config import ConfigError

    if jit and strategy.num_replicas_in_sync > 1 and not has_gpu:
        raise ConfigError(f"train.jit_compile: XLA cannot compile a {strategy.num_replicas_in_sync}-replica "
                          f"{type(strategy).__name__} over CPU devices (TensorFlow's XLA reads every replica's "
                          "variables from one device); set train.jit_compile to off or auto on CPU")


@dataclasses.dataclass
class RunSetup:
    """What ``setup_run`` decided: the strategy, this worker's role and folder, precision, XLA."""

    strategy: object
    is_chief: bool
    run_dir: str
    precision: str
    jit_compile: bool


def setup_run(cfg, model_dir: str, strategy_name: str, **versions) -> RunSetup:
    """Seeds, determinism, precision policy and strategy for a run, its folder, and (on the
    chief) ``config.yaml`` and ``versions.json`` (with ``versions`` added).

    Non-chief workers of a multi-worker run get their own temporary folder
    (``<model_dir>/.workers/worker_N``), so two workers never write (or lock) the same file.
    """
    import keras
    import tensorflow as tf

    from exfuse_keras.config import save_config
    from exfuse_keras.training.strategy import resolve_jit, resolve_precision, select_strategy

    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision = resolve_precision(cfg.train.mixed_precision)
    keras.mixed_precision.set_global_policy(precision)
    jit = resolve_jit(cfg.train.jit_compile)
    strategy = select_strategy(strategy_name)
    check_jit_compile(jit, strategy, has_gpu=bool(tf.config.list_logical_devices("GPU")))
    is_chief = _is_chief(strategy)
    run_dir = model_dir if is_chief else os.path.join(model_dir, ".workers", f"worker_{_task_id()}")
    os.makedirs(run_dir, exist_ok=True)
    if is_chief:
        save_config(cfg, os.path.join(model_dir, "config.yaml"))
        write_versions(os.path.join(model_dir, "versions.json"), strategy=type(strategy).__name__,
                       replicas=strategy.num_replicas_in_sync, precision=precision, jit_compile=jit, **versions)
    return RunSetup(strategy, is_chief, run_dir, precision, jit)


def _task_id() -> int:
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


def _is_chief(strategy) -> bool:
    resolver = getattr(getattr(strategy, "extended", None), "_cluster_resolver", None)
    if resolver is None or not os.environ.get("TF_CONFIG"):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in ("chief", None) or (task_type == "worker" and task_id == 0
                                            and "chief" not in resolver.cluster_spec().as_dict())
