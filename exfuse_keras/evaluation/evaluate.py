"""Single-scale evaluation of a trained model on a split, with the VOC metric.

One confusion matrix is accumulated over the whole split at the original resolution: images
are evaluated one at a time, padded to a multiple of 32 with the padding labelled 255, so
padded pixels are never scored (exfuse_keras/metrics.py states the convention).

    python evaluate.py --weights runs/quickstart [--split val] [--config other.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def load_run(weights: str, config_path=None, overrides=()):
    """(config, keras model) from a run directory (its config.yaml and best.keras) or a .keras file."""
    import keras

    import exfuse_keras.layers  # noqa: F401  (registers the custom layers for load_model)
    from exfuse_keras.config import ConfigError, load_config

    if os.path.isdir(weights):
        model_path = os.path.join(weights, "best.keras")
        if not os.path.isfile(model_path):
            model_path = os.path.join(weights, "last.keras")
        config_path = config_path or os.path.join(weights, "config.yaml")
    else:
        model_path = weights
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"--weights {weights}: no best.keras, last.keras or .keras file there")
    if config_path is None:
        raise ConfigError(f"--weights {weights} is a file: pass --config (the run's config.yaml)")
    cfg = load_config(config_path, overrides)
    return cfg, keras.models.load_model(model_path, compile=False)


def evaluate(cfg, model, split: str = "val", progress: bool = True) -> dict:
    """The split's scores: mIoU, per-class IoU and accuracy, pixel and mean class accuracy."""
    import numpy as np
    from tqdm import tqdm

    from exfuse_keras.data.pipeline import make_dataset, num_examples
    from exfuse_keras.metrics import StreamingMeanIoU, scores_from_confusion

    metric = StreamingMeanIoU(cfg.data.num_classes, cfg.data.ignore_label)
    dataset = make_dataset(cfg, split, training=False, batch_size=1)
    for images, masks in tqdm(dataset, total=num_examples(cfg.data, split), disable=not progress,
                              desc=f"evaluating {split}", unit="img"):
        outputs = model(images, training=False)
        metric.update_state(masks, outputs["logits"] if isinstance(outputs, dict) else outputs)
    scores = scores_from_confusion(metric.matrix.numpy())
    scores["confusion_matrix"] = metric.matrix.numpy().astype(np.int64)
    return scores


def format_table(scores: dict, class_names) -> str:
    lines = [f"{'class':<16}{'IoU':>8}{'acc':>8}"]
    for name, iou, acc in zip(class_names, scores["iou"], scores["class_accuracy"]):
        fmt = lambda v: "   -   " if v != v else f"{100 * v:7.2f}"  # noqa: E731  (NaN: absent class)
        lines.append(f"{name:<16}{fmt(iou):>8}{fmt(acc):>8}")
    lines.append(f"mIoU {100 * scores['miou']:.2f}   pixel accuracy {100 * scores['pixel_accuracy']:.2f}   "
                 f"mean class accuracy {100 * scores['mean_class_accuracy']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a trained ExFuse model (single scale, VOC metric).")
    parser.add_argument("--weights", required=True, help="a training run's folder or a .keras file")
    parser.add_argument("--config", help="config (default: the run folder's config.yaml)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--output", help="JSON report path (default: <run>/eval_<split>.json for a run folder)")
    args = parser.parse_args(argv)

    from exfuse_keras.config import ConfigError

    try:
        cfg, model = load_run(args.weights, args.config, args.set)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scores = evaluate(cfg, model, args.split)
    print(format_table(scores, cfg.data.class_names))
    output = args.output or (os.path.join(args.weights, f"eval_{args.split}.json")
                             if os.path.isdir(args.weights) else None)
    if output:
        report = {"split": args.split, "miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
                  "mean_class_accuracy": scores["mean_class_accuracy"],
                  "per_class": {name: {"iou": None if iou != iou else float(iou),
                                       "accuracy": None if acc != acc else float(acc)}
                                for name, iou, acc in zip(cfg.data.class_names, scores["iou"],
                                                          scores["class_accuracy"])},
                  "confusion_matrix": scores["confusion_matrix"].tolist()}
        with open(output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"report: {output}")
    return 0
