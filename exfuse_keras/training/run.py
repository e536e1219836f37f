"""The training job behind train.py: config -> dataset -> model -> ``model.fit`` -> run directory.

Run directory (one layout; evaluation and export read it)::

    <model-dir>/
      config.yaml      the resolved config (load_config reads it back)
      versions.json    Python, TensorFlow, Keras, the git commit, the strategy and replicas
      best.keras       the model with the best validation mIoU so far
      last.keras       the model at the end of training
      backup/          resume state (AtomicBackupAndRestore): rerun the same command after a kill;
                       deleted once last.keras is written
      logs/            TensorBoard: loss per head, lr, mIoU, steps/s; images/ (predictions);
                       steps/ (the losses every train.log_every_steps steps)
      history.csv      one row per epoch
      steps.csv        each loss's mean over every train.log_every_steps steps

An "epoch" is ``train.steps_per_epoch`` steps: the unit of backup, validation and logging.
Its batches are a pure function of (``train.seed``, global step): after a kill the rerun
restores the last finished epoch and replays exactly the batches the lost one had, so with
``train.deterministic`` it ends with the uninterrupted run's weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from exfuse_keras.training.rundir import check_time_budget, logged_best, resume, resumed_training_data, setup_run


def miou_key(output_names, validation: bool = True) -> str:
    """The log key of the mIoU metric: Keras prefixes metrics with the output name only when
    the model has more than one output."""
    key = "logits_miou" if len(output_names) > 1 else "miou"
    return f"val_{key}" if validation else key


def parse_args(argv=None):
    from exfuse_keras.training.strategy import STRATEGIES

    parser = argparse.ArgumentParser(description="Train ExFuse with model.fit.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--model-dir", required=True, help="run directory (config, checkpoints, logs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.batch_size=8 (repeatable)")
    parser.add_argument("--strategy", default="auto", choices=STRATEGIES,
                        help="auto: TPU if present, MirroredStrategy with >1 GPU, else default")
    return parser.parse_args(argv)


def with_targets(dataset, output_names):
    """(image, mask) -> (image, {output: mask}): every loss derives its own target from the mask."""
    return dataset.map(lambda image, mask: (image, {name: mask for name in output_names}))


def validation_dataset(cfg, output_names, replicas: int):
    """Validation batches of ``train.val_batch_size`` images per replica, with targets.

    Under several replicas the last, partial batch is filled up with images whose pixels are
    all the ignore label, so no replica gets an empty batch (TF 2.21's oneDNN CPU convolution
    returns a wrong shape for one, which crashed multi-worker validation on an AMD Zen 5) and
    the metric and losses do not change (they skip ignored pixels and unlabelled images).
    """
    import tensorflow as tf

    from exfuse_keras.data.pipeline import make_dataset

    global_batch = cfg.train.val_batch_size * replicas
    dataset = make_dataset(cfg, "val", training=False, batch_size=global_batch)
    if replicas > 1:
        def fill(images, masks):
            missing = global_batch - tf.shape(images)[0]
            images = tf.pad(images, [[0, missing]] + [[0, 0]] * (images.shape.rank - 1))
            masks = tf.pad(masks, [[0, missing]] + [[0, 0]] * (masks.shape.rank - 1),
                           constant_values=cfg.data.ignore_label)
            return images, masks

        dataset = dataset.map(fill)
    return with_targets(dataset, output_names)


def training_dataset(cfg, output_names, start_step: int, strategy):
    """The training batches from global step ``start_step`` on, for ``strategy``, with targets
    (``rundir.resumed_training_data``)."""
    from exfuse_keras.data.pipeline import make_dataset, num_examples, prepare_sources

    prepare_sources(cfg.data)  # the records, prepared once, before any input pipeline asks for them

    def dataset(epoch, input_context):
        return with_targets(make_dataset(cfg, "train", training=True, epoch=epoch, repeat=True,
                                         input_context=input_context), output_names)

    return resumed_training_data(strategy, cfg.train.batch_size, start_step,
                                 lambda input_context: num_examples(cfg.data, "train", input_context), dataset)


def initialize_from(model, init) -> int:
    """Copies weights from a previous stage's run directory or ``.keras`` file.

    ``init.part == "backbone"`` copies the backbone's layers; ``"model"`` every layer whose
    name and weight shapes match (a head for another number of classes is left as built).
    Returns the number of layers copied.
    """
    from exfuse_keras.backbones.weights import WeightsError, copy_weights_by_name
    from exfuse_keras.saving import load_model_file

    path = init.from_run
    if os.path.isdir(path):
        path = os.path.join(path, "best.keras")
    if not os.path.isfile(path):
        raise WeightsError(f"train.init.from_run: no model at {path}")
    source = load_model_file(path)
    if init.part == "backbone":
        if "backbone" not in [layer.name for layer in source.layers]:
            raise WeightsError(f"train.init.from_run: {path} has no 'backbone' layer; expected an ExFuse run's "
                               f"model (or train.init.part: model)")
        return copy_weights_by_name(source.get_layer("backbone"), model.get_layer("backbone"))
    copied = copy_weights_by_name(source, model, strict=False)
    if not copied:  # training would silently start from scratch
        raise WeightsError(f"train.init.from_run: {path} has no layer of this model's names and shapes; "
                           f"expected a run of the same architecture")
    return copied


def build_training_model(cfg, jit_compile: bool, clock=None):
    """The compiled model: losses per output, the streaming mIoU on ``logits``, the optimiser
    (its schedule driven by ``clock`` too, when given: see ``TimeBudget``)."""
    from exfuse_keras.losses import build_losses
    from exfuse_keras.metrics import StreamingMeanIoU
    from exfuse_keras.model import build_model
    from exfuse_keras.training.optim import build_optimizer

    model = build_model(cfg)
    if cfg.train.init.from_run:
        copied = initialize_from(model, cfg.train.init)
        print(f"initialised {copied} layers ({cfg.train.init.part}) from {cfg.train.init.from_run}")
    output_names = list(model.output.keys())
    losses, loss_weights = build_losses(cfg, output_names)
    model.compile(
        optimizer=build_optimizer(cfg, cfg.train.epochs * cfg.train.steps_per_epoch, clock),
        loss=losses, loss_weights=loss_weights,
        metrics={"logits": [StreamingMeanIoU(cfg.data.num_classes, cfg.data.ignore_label, name="miou")]},
        jit_compile=jit_compile,
    )
    return model


def _callbacks(cfg, run_dir: str, val_sample, backup_dir: str, monitor: str, clock=None, best=None,
               start_epoch: int = 0):
    """Every worker runs the same callbacks (saving and predicting run collective ops under
    MultiWorkerMirroredStrategy, so all workers must take part); a non-chief worker's
    ``run_dir`` is its own temporary folder. ``best``: the monitored value of ``best.keras``
    (a resumed run's, ``rundir.logged_best``)."""
    import keras
    import numpy as np

    from exfuse_keras.training.callbacks import (AtomicBackupAndRestore, AtomicModelCheckpoint, EpochTimeEstimate,
                                                 ImageSummary, LearningRateLogger, NonFiniteLossGuard, StepLossLog,
                                                 Throughput, time_budget)

    palette = np.asarray(cfg.data.resolved_palette, np.uint8)
    # Before the guard, so the steps before a non-finite loss, and its step, reach steps.csv.
    steps = ([StepLossLog(cfg.train.log_every_steps, os.path.join(run_dir, "steps.csv"),
                          os.path.join(run_dir, "logs", "steps"))] if cfg.train.log_every_steps else [])
    callbacks = steps + [
        # First to save nothing: it raises at the bad step, before any callback below saves a non-finite state.
        NonFiniteLossGuard(backup_dir),
        LearningRateLogger(),
        Throughput(cfg.train.batch_size),
        EpochTimeEstimate(cfg.train.steps_per_epoch, cfg.train.epochs - start_epoch),
        AtomicModelCheckpoint(os.path.join(run_dir, "best.keras"), monitor=monitor, mode="max",
                              save_best_only=True, initial_value_threshold=best),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False),
        ImageSummary(os.path.join(run_dir, "logs"), *val_sample, palette),
    ]
    # Last, so an epoch counts as done for resume only after everything above has logged it.
    callbacks.append(AtomicBackupAndRestore(backup_dir, save_freq="epoch"))
    return callbacks + time_budget(cfg, clock)


BUILT_IN_DATA = ("shapes", "scenes")


def start_report(cfg) -> str:
    """What train.py says before the first step: the data's split sizes and where the backbone's
    weights come from, with a warning when a user's dataset starts from random weights."""
    from exfuse_keras.data.pipeline import num_examples

    data, backbone = cfg.data, cfg.model.backbone
    lines = [f"data: {data.dataset} at {data.root}: {num_examples(data, 'train'):,} train and "
             f"{num_examples(data, 'val'):,} val images, {data.num_classes} classes"]
    if cfg.train.init.from_run:
        lines.append(f"weights: from {cfg.train.init.from_run} ({cfg.train.init.part})")
    elif backbone.weights == "imagenet":
        lines.append("backbone: ImageNet weights (keras.applications)")
    elif backbone.weights:
        lines.append(f"backbone: weights from {backbone.weights}")
    else:
        lines.append("backbone: random initialisation (model.backbone.weights: null)")
        if data.dataset not in BUILT_IN_DATA:
            lines.append("warning: the backbone starts from random weights on this dataset; from scratch a "
                         "segmentation network needs far more data and steps. Set model.backbone.weights: "
                         "imagenet (ResNet-50/101/152) or a weights file, e.g. base: configs/own_data.yaml")
    return "\n".join(lines)


def sized_by_data(cfg, model_dir: str):
    """``cfg`` with its ``auto`` sizes measured (exfuse_keras/data/sizing.py), and the lines that
    say what was chosen. A run that resumes keeps the numbers its ``config.yaml`` recorded, so a
    dataset that grew since does not change the schedule under it."""
    from exfuse_keras.config import load_config
    from exfuse_keras.data.sizing import resolve_auto_sizes

    saved = os.path.join(model_dir, "config.yaml")
    if (cfg.data.crop_size == "auto" or cfg.train.steps_per_epoch == "auto") and os.path.isfile(saved) \
            and os.path.isdir(os.path.join(model_dir, "backup")):
        recorded = load_config(saved)
        if cfg.data.crop_size == "auto":
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, crop_size=recorded.data.crop_size))
        if cfg.train.steps_per_epoch == "auto":
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(
                cfg.train, steps_per_epoch=recorded.train.steps_per_epoch))
    return resolve_auto_sizes(cfg)


def fit_verbosity(verbose="auto", stream=None):
    """Keras fit's ``verbose``: for ``"auto"``, the progress bar (1) on a terminal and one line per
    epoch (2) otherwise, since the bar redraws itself with carriage returns at every step, which a
    log file or a CI console keeps as one line each."""
    if verbose != "auto":
        return verbose
    stream = sys.stdout if stream is None else stream
    return 1 if getattr(stream, "isatty", lambda: False)() else 2


def train(cfg, model_dir: str, strategy_name: str = "auto", verbose="auto") -> dict:
    """Trains (or resumes) the run in ``model_dir``; returns the last epoch's logs and timing.
    ``verbose`` is Keras fit's, ``"auto"`` as ``fit_verbosity`` chooses."""
    import keras
    import tensorflow as tf

    from exfuse_keras.atomic import atomic_path, atomic_remove
    from exfuse_keras.data.pipeline import make_dataset
    from exfuse_keras.training.compat import build_before_fit, patch_log_reduction
    from exfuse_keras.training.optim import learning_rate_clock

    verbose = fit_verbosity(verbose)
    cfg, sized = sized_by_data(cfg, model_dir)
    setup = setup_run(cfg, model_dir, strategy_name)
    strategy, is_chief, run_dir, jit = setup.strategy, setup.is_chief, setup.run_dir, setup.jit_compile
    backup_dir = os.path.join(run_dir, "backup")
    print(f"strategy: {type(strategy).__name__}, replicas: {strategy.num_replicas_in_sync}, "
          f"global batch: {cfg.train.batch_size}, precision: {setup.precision}, XLA: {jit}")
    check_time_budget(cfg, strategy)
    patch_log_reduction()
    with strategy.scope():
        clock = learning_rate_clock(cfg)
        model = build_training_model(cfg, jit, clock)
        output_names = list(model.output.keys())
        # Built from the data's spec, so fit reads no batch to build it (see compat.py).
        build_before_fit(model, with_targets(make_dataset(cfg, "train", training=True, repeat=True),
                                             output_names).element_spec)
    if is_chief and verbose:
        model.summary(line_length=100, expand_nested=False)

    start_epoch = resume(run_dir)
    train_data = training_dataset(cfg, output_names, start_epoch * cfg.train.steps_per_epoch, strategy)
    val_data = validation_dataset(cfg, output_names, strategy.num_replicas_in_sync)
    # Workers of a multi-worker run take every other val batch (the split is one file, too few
    # to shard by file); the mIoU's confusion matrix is summed over all of them.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    val_data = val_data.with_options(options)
    images, masks = next(iter(make_dataset(cfg, "val", training=False, batch_size=4)))
    val_sample = (images.numpy(), masks.numpy())

    monitor = miou_key(output_names)
    best = logged_best(os.path.join(run_dir, "history.csv"), monitor) if start_epoch else None
    callbacks = _callbacks(cfg, run_dir, val_sample, backup_dir, monitor, clock, best, start_epoch)
    if is_chief:
        print("\n".join([*sized, start_report(cfg)]))
    started = time.perf_counter()
    history = model.fit(train_data, epochs=cfg.train.epochs, steps_per_epoch=cfg.train.steps_per_epoch,
                        validation_data=val_data, callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - started
    with atomic_path(os.path.join(run_dir, "last.keras")) as tmp:
        model.save(tmp)
    # Only now: a kill before this line resumes from the backup (after the last epoch, nothing to train).
    atomic_remove(backup_dir)
    last = {key: float(values[-1]) for key, values in history.history.items()} if history.history else {}
    return {"logs": last, "train_seconds": seconds, "epochs_run": len(history.epoch),
            "val_miou": last.get(monitor, float("nan")),
            "best_val_miou": max(history.history.get(monitor, [float("nan")])),
            "steps_run": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            "stopped_by_time_budget": any(getattr(c, "stopped_early", False) for c in callbacks),
            "config": cfg}


def main(argv=None) -> int:
    args = parse_args(argv)
    from exfuse_keras.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from exfuse_keras.atomic import check_folder, os_error_line
    from exfuse_keras.backbones.weights import WeightsError
    from exfuse_keras.data.checks import DataError
    from exfuse_keras.saving import ModelFileError
    from exfuse_keras.training.callbacks import NonFiniteLossError

    try:
        check_folder(args.model_dir, "--model-dir")
        result = train(cfg, args.model_dir, args.strategy)
    except (ConfigError, DataError, WeightsError, ModelFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only folder
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    cfg = result["config"]
    if result["stopped_by_time_budget"]:
        print(f"the time budget (train.max_train_seconds = {cfg.train.max_train_seconds:g} s) ended the run after "
              f"{result['steps_run']} of {cfg.train.epochs * cfg.train.steps_per_epoch} steps"
              + ("; the learning-rate schedule was annealed to it" if cfg.train.budget_mode == "anneal" else ""))
    if result["epochs_run"] == 0:  # a rerun of a finished run (e.g. killed while writing last.keras)
        print(f"nothing left to train: all {cfg.train.epochs} epochs were done before; last.keras written; "
              f"run directory {args.model_dir}")
        return 0
    print(f"trained {result['epochs_run']} epochs in {result['train_seconds']:.0f} s; "
          f"val mIoU {result['val_miou']:.4f} (best {result['best_val_miou']:.4f}); "
          f"run directory {args.model_dir}")
    return 0
