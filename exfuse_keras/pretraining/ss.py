"""Semantic supervision (SS) pretraining of a backbone on ImageNet (ExFuse Sec. 3.1, Fig. 3).

No public ImageNet weights exist for the rearranged (LR) backbones, and the paper pretrains
them with SS branches on res2, res3 and res4: auxiliary classifiers (stride-2 conv blocks down
to res5's resolution, global average pooling, a dense layer) trained with a softmax loss on the
image's class, beside the usual head on res5, so low-level features learn semantics too.

``build_ss_classifier(cfg)``: image ``[N, S, S, 3]`` RGB 0-255 -> dict of logits, each
``[N, K]`` (K = ImageNet's 1000 classes): ``"logits"`` (res5 -> pool -> dense) and ``"ss_res2"``
... ``"ss_res4"`` for ``model.ss.levels``, built by the segmentation model's own
``semantic_supervision`` (there with sigmoid targets; here with softmax ones).

``pretrain(cfg, model_dir)`` trains it with ``model.fit`` on ``make_imagenet_dataset`` and
writes a run directory like train.py's, plus ``backbone.keras``: the backbone alone, which a
segmentation config names as ``model.backbone.weights`` (configs/stages/*_stage1.yaml).

    python pretrain.py --config configs/pretraining/resnext101_lr_ss.yaml --model-dir runs/ss_lr
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import keras

from exfuse_keras.backbones.resnext import build_backbone
from exfuse_keras.config import Config
from exfuse_keras.layers import InputNormalization
from exfuse_keras.model import semantic_supervision

BACKBONE_FILE = "backbone.keras"
FILLER_LABEL = -1  # the label of the all-black images that fill up a last validation batch


@keras.saving.register_keras_serializable(package="exfuse")
class LabelledTopK(keras.metrics.SparseTopKCategoricalAccuracy):
    """Top-k accuracy over the images whose label is not ``FILLER_LABEL`` (labels ``[N]``,
    logits ``[N, K]``): the filler images of a last validation batch are not counted."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.reshape(y_true, (-1,))
        labelled = keras.ops.cast(keras.ops.not_equal(y_true, FILLER_LABEL), "float32")
        if sample_weight is not None:
            labelled = labelled * keras.ops.reshape(keras.ops.cast(sample_weight, "float32"), (-1,))
        return super().update_state(keras.ops.maximum(y_true, 0), y_pred, sample_weight=labelled)


def build_ss_classifier(cfg: Config, num_classes: int = 1000, name: str = "ss_classifier") -> keras.Model:
    """The backbone of ``cfg.model.backbone`` with an ImageNet head and SS heads (see module doc)."""
    m = cfg.model
    if m.backbone.architecture != "resnet":
        from exfuse_keras.config import ConfigError

        raise ConfigError(f"model.backbone.architecture {m.backbone.architecture!r}: SS pretraining builds "
                          "ResNet/ResNeXt backbones (the LR ones have no ImageNet weights); MobileNetV3 has them: "
                          "set model.backbone.weights: imagenet")
    image = keras.Input((None, None, 3), name="image")
    x = InputNormalization(m.backbone.resolved_preprocessing, name="normalization")(image)
    backbone = build_backbone(m.backbone)
    features = backbone(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features["res5"])
    outputs = {"logits": keras.layers.Dense(num_classes, dtype="float32", name="logits")(pooled),
               **semantic_supervision(m, features, num_classes)}
    return keras.Model(image, outputs, name=name)


def build_pretraining_model(cfg: Config, num_classes: int, jit_compile: bool = False, clock=None) -> keras.Model:
    """The compiled classifier: softmax cross-entropy on every head (SS heads weighted by
    ``train.ss_loss_weight``), top-1 and top-5 accuracy on the main head, the segmentation
    training's optimiser (poly + warm-up, weight decay skipping BN and biases; its schedule
    driven by ``clock`` too, when given)."""
    from exfuse_keras.training.optim import build_optimizer

    model = build_ss_classifier(cfg, num_classes)
    names = list(model.output.keys())
    # FILLER_LABEL marks the images that fill up the last validation batch: no loss, no accuracy.
    losses = {name: keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=FILLER_LABEL)
              for name in names}
    weights = {name: 1.0 if name == "logits" else cfg.train.ss_loss_weight for name in names}
    metrics = {"logits": [LabelledTopK(1, name="top1"), LabelledTopK(5, name="top5")]}
    model.compile(optimizer=build_optimizer(cfg, cfg.train.epochs * cfg.train.steps_per_epoch, clock), loss=losses,
                  loss_weights=weights, metrics=metrics, jit_compile=jit_compile)
    return model


def imagenet_classes(cfg: Config) -> int:
    from exfuse_keras.data.imagenet import prepare_imagenet

    return prepare_imagenet(cfg.data).info.features["label"].num_classes


def pretrain(cfg: Config, model_dir: str, strategy_name: str = "auto", verbose="auto") -> dict:
    """Trains (or resumes) SS pretraining in ``model_dir``; returns the last epoch's logs.

    Run directory: ``config.yaml``, ``versions.json``, ``best.keras`` (best val top-1),
    ``backbone.keras`` (the backbone of ``best.keras``), ``last.keras``, ``backup/``, ``logs/``,
    ``history.csv``. Resume after a kill by rerunning the same command.
    """
    import tensorflow as tf

    from exfuse_keras.data.imagenet import make_imagenet_dataset
    from exfuse_keras.data.pipeline import shard_size
    from exfuse_keras.atomic import atomic_path, atomic_remove
    from exfuse_keras.training.callbacks import (AtomicBackupAndRestore, AtomicModelCheckpoint, LearningRateLogger,
                                                 NonFiniteLossGuard, Throughput, time_budget)
    from exfuse_keras.training.compat import build_before_fit, patch_log_reduction
    from exfuse_keras.training.optim import learning_rate_clock
    from exfuse_keras.training.rundir import (check_time_budget, logged_best, resume, resumed_training_data,
                                              setup_run)

    setup = setup_run(cfg, model_dir, strategy_name, task="ss_pretraining")
    strategy, is_chief, run_dir, jit = setup.strategy, setup.is_chief, setup.run_dir, setup.jit_compile
    num_classes = imagenet_classes(cfg)
    print(f"SS pretraining: strategy {type(strategy).__name__}, replicas {strategy.num_replicas_in_sync}, "
          f"global batch {cfg.train.batch_size}, {num_classes} classes, SS heads on {cfg.model.ss.levels}")

    check_time_budget(cfg, strategy)
    patch_log_reduction()
    with strategy.scope():
        clock = learning_rate_clock(cfg)
        model = build_pretraining_model(cfg, num_classes, jit, clock)
        names = list(model.output.keys())
        spec = with_class_targets(make_imagenet_dataset(cfg, "train", training=True, repeat=True), names)
        build_before_fit(model, spec.element_spec)
    if is_chief and verbose:
        model.summary(line_length=100)

    start_epoch = resume(run_dir)
    train_examples = _train_examples(cfg)

    def dataset(epoch, input_context):
        return with_class_targets(make_imagenet_dataset(cfg, "train", training=True, epoch=epoch, repeat=True,
                                                        input_context=input_context), names)

    train_data = resumed_training_data(strategy, cfg.train.batch_size, start_epoch * cfg.train.steps_per_epoch,
                                       lambda input_context: shard_size(train_examples, input_context), dataset)
    val_data = pretraining_validation_dataset(cfg, names, strategy.num_replicas_in_sync)
    options = tf.data.Options()  # workers of a multi-worker run take every other val batch
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    val_data = val_data.with_options(options)
    monitor = "val_logits_top1"
    best = logged_best(os.path.join(run_dir, "history.csv"), monitor) if start_epoch else None
    backup_dir = os.path.join(run_dir, "backup")
    callbacks = [  # the guard first, BackupAndRestore last (see training/run.py)
        NonFiniteLossGuard(backup_dir), LearningRateLogger(), Throughput(cfg.train.batch_size),
        AtomicModelCheckpoint(os.path.join(run_dir, "best.keras"), monitor=monitor, mode="max",
                              save_best_only=True, initial_value_threshold=best),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False),
        AtomicBackupAndRestore(backup_dir, save_freq="epoch"),
    ]
    callbacks += time_budget(cfg, clock)
    started = time.perf_counter()
    history = model.fit(train_data, epochs=cfg.train.epochs, steps_per_epoch=cfg.train.steps_per_epoch,
                        validation_data=val_data, callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - started
    with atomic_path(os.path.join(run_dir, "last.keras")) as tmp:
        model.save(tmp)
    export_backbone(os.path.join(run_dir, "best.keras"), os.path.join(run_dir, BACKBONE_FILE))
    atomic_remove(backup_dir)  # only now: a kill before resumes from the backup (see training/run.py)
    last = {key: float(values[-1]) for key, values in history.history.items()} if history.history else {}
    return {"logs": last, "train_seconds": seconds, "epochs_run": len(history.epoch),
            "val_top1": last.get(monitor, float("nan")), "backbone": os.path.join(run_dir, BACKBONE_FILE)}


def _train_examples(cfg: Config) -> int:
    """Examples of ImageNet's train split (TFDS knows its length, mock data's included)."""
    import tensorflow_datasets as tfds

    from exfuse_keras.data.imagenet import prepare_imagenet

    records = prepare_imagenet(cfg.data).as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    return int(records.cardinality())


def pretraining_validation_dataset(cfg: Config, output_names, replicas: int):
    """Validation batches of ``train.val_batch_size`` images per replica, with class targets.

    Under several replicas the last, partial batch is filled up with black images labelled
    ``FILLER_LABEL``, which the losses and ``LabelledTopK`` leave out, so no replica gets an empty
    batch (as ``training.run.validation_dataset`` does for segmentation).
    """
    import tensorflow as tf

    from exfuse_keras.data.imagenet import make_imagenet_dataset

    global_batch = cfg.train.val_batch_size * replicas
    dataset = make_imagenet_dataset(cfg, "val", training=False, batch_size=global_batch)
    if replicas > 1:
        def fill(images, labels):
            missing = global_batch - tf.shape(images)[0]
            images = tf.pad(images, [[0, missing], [0, 0], [0, 0], [0, 0]])
            return images, tf.pad(labels, [[0, missing]], constant_values=FILLER_LABEL)

        dataset = dataset.map(fill)
    return with_class_targets(dataset, output_names)


def with_class_targets(dataset, output_names):
    """(image, label) -> (image, {output: label}): every head predicts the image's class."""
    return dataset.map(lambda image, label: (image, {name: label for name in output_names}))


def export_backbone(classifier_path: str, output_path: str) -> str:
    """Saves the backbone of a pretrained SS classifier alone (the file stage 1 starts from)."""
    from exfuse_keras.atomic import atomic_path
    from exfuse_keras.saving import load_model_file

    classifier = load_model_file(classifier_path)
    with atomic_path(output_path) as tmp:
        classifier.get_layer("backbone").save(tmp)
    return output_path


def main(argv=None) -> int:
    from exfuse_keras.config import ConfigError, load_config
    from exfuse_keras.training.strategy import STRATEGIES

    parser = argparse.ArgumentParser(description="Pretrain a backbone on ImageNet with semantic supervision.")
    parser.add_argument("--config", required=True, help="YAML config (configs/pretraining/)")
    parser.add_argument("--model-dir", required=True, help="run directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--strategy", default="auto", choices=STRATEGIES)
    args = parser.parse_args(argv)
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

    try:  # the same errors, and the same one line each, as train.py
        check_folder(args.model_dir, "--model-dir")
        result = pretrain(cfg, args.model_dir, args.strategy)
    except (ConfigError, DataError, WeightsError, ModelFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only folder
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(f"pretrained {result['epochs_run']} epochs in {result['train_seconds']:.0f} s; val top-1 "
          f"{result['val_top1']:.4f}; backbone for stage 1: {result['backbone']}")
    return 0
