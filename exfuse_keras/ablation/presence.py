"""Semantic supervision on built-in data: backbone pretraining on class-presence labels.

In the paper SS is a property of the backbone's ImageNet pretraining (Sec. 3.1, Fig. 3): the
classifier on res5 is trained together with auxiliary classifiers on res2, res3 and res4, so the
early stages learn semantics. Table 3's row 1 starts from weights pretrained without them, row
2 from weights pretrained with them. A built-in dataset has no ImageNet, so the ablation does the
same on the dataset's own images: the classification target of a crop is the set of classes
present in it (multi-label, sigmoid cross-entropy on every head), the classifier is
``build_ss_classifier`` (res5 -> pool -> dense, plus ``SemanticSupervisionHead`` on res2..res4
when SS is on), and both variants train for the same steps, seed and recipe. The backbone alone
is saved as ``backbone.keras``, which the row's segmentation run loads as
``model.backbone.weights``.
"""

from __future__ import annotations

import json
import os
import time

from exfuse_keras.config import SS_LEVELS, Config, ConfigError, config_from_dict, config_to_dict

BACKBONE_FILE = "backbone.keras"
RESULT_FILE = "pretraining.json"


def presence_targets(mask, num_classes: int):
    """Multi-hot ``[N, C]`` float32: which classes have at least one labelled pixel in each mask."""
    import tensorflow as tf

    mask = tf.cast(tf.reshape(mask, [tf.shape(mask)[0], -1]), tf.int32)
    labelled = tf.where(mask < num_classes, mask, -1)
    return tf.reduce_max(tf.one_hot(labelled, num_classes), axis=1)


def pretraining_config(cfg: Config, semantic_supervision: bool, steps: int) -> Config:
    """The row's config for its backbone's pretraining: SS heads on res2..res4 or none, ``steps``
    steps in 4 epochs, no time budget."""
    values = config_to_dict(cfg)
    values["model"]["ss"]["levels"] = list(SS_LEVELS) if semantic_supervision else []
    values["model"]["backbone"]["weights"] = None
    values["train"]["ss_loss_weight"] = 1.0  # every head weighs as much as the main one, as for ImageNet SS
    epochs = min(4, steps)
    values["train"].update(epochs=epochs, steps_per_epoch=max(1, steps // epochs), max_train_seconds=None)
    return config_from_dict(values, "ablation pretraining")


def pretrain_presence(cfg: Config, run_dir: str, verbose: int = 2) -> dict:
    """Trains the class-presence classifier of ``cfg`` (see module doc) in ``run_dir``, or returns
    the result of a finished one. Returns ``{"backbone", "seconds", "loss", "ss"}``."""
    result_path = os.path.join(run_dir, RESULT_FILE)
    total = cfg.train.epochs * cfg.train.steps_per_epoch
    if os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)
        if result.get("steps") != total:
            raise ConfigError(f"{result_path} was pretrained for {result.get('steps')} steps, not the {total} "
                              "asked for; give this sweep its own --output, or the same --pretrain-steps")
        return result
    import keras

    from exfuse_keras.data.pipeline import make_dataset
    from exfuse_keras.pretraining.ss import build_ss_classifier
    from exfuse_keras.training.compat import build_before_fit
    from exfuse_keras.training.optim import build_optimizer

    os.makedirs(run_dir, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    num_classes = cfg.data.num_classes
    model = build_ss_classifier(cfg, num_classes, name="presence_classifier")
    names = list(model.output.keys())
    weights = {name: 1.0 if name == "logits" else cfg.train.ss_loss_weight for name in names}
    model.compile(optimizer=build_optimizer(cfg, total), loss={n: keras.losses.BinaryCrossentropy(from_logits=True)
                                                              for n in names}, loss_weights=weights)
    data = make_dataset(cfg, "train", training=True, repeat=True).map(
        lambda image, mask: (image, {n: presence_targets(mask, num_classes) for n in names}))
    # Built from the data's spec: without a strategy, fit would build the optimizer inside its
    # first traced step, and TensorFlow would trace that step twice (about 15 s a model at 64x64
    # on 2 cores).
    build_before_fit(model, data.element_spec)
    started = time.perf_counter()
    history = model.fit(data, epochs=cfg.train.epochs, steps_per_epoch=cfg.train.steps_per_epoch, verbose=verbose)
    seconds = time.perf_counter() - started
    backbone_path = os.path.join(run_dir, BACKBONE_FILE)
    partial = backbone_path + ".partial.keras"
    model.get_layer("backbone").save(partial)
    os.replace(partial, backbone_path)
    result = {"backbone": backbone_path, "seconds": seconds, "loss": float(history.history["loss"][-1]),
              "ss": list(cfg.model.ss.levels), "steps": total}
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
