"""Evaluation of a trained model on a split with the VOC metric (behind evaluate.py).

    python evaluate.py --weights runs/quickstart                     # the config's protocol (single scale)
    python evaluate.py --weights runs/quickstart --tta               # 6 scales x flip, the paper's final numbers
    python evaluate.py --weights runs/quickstart --tta --scales 0.75,1,1.25 --no-flip
    python evaluate.py --weights runs/voc --sliding-window 512,341   # windows for images beyond the crop
    python evaluate.py --weights runs/voc --strategy mirrored        # one image per replica at a time

The metric (exfuse_keras/metrics.py): one confusion matrix accumulated over the whole split at
each image's original resolution, 255 ignored; per-class IoU = TP / (TP + FP + FN), a class
absent from both ground truth and predictions left out of the mean. Every image is cropped back
to its own size from the input pipeline's padded batch and predicted by ``Segmenter`` (padding
to a multiple of 32 with the mean colour, each view resized back to the original size), so the
matrix counts exactly the image's labelled pixels.

Protocol: the config's ``eval`` section (``scales``, ``flip``, ``sliding_window``) unless
arguments override it; ``--tta`` is the paper's 0.5, 0.75, 1.0, 1.25, 1.5, 1.75 with flip,
softmax probabilities averaged at the original resolution (exfuse_keras/inference/tta.py).

Outputs: the per-class table (IoU, accuracy, boundary IoU) with mIoU, boundary mIoU (Boundary IoU,
Cheng et al. CVPR 2021, band 2% of the image diagonal), pixel accuracy and mean class accuracy;
a JSON report and a picture of the row-normalised confusion matrix next to it
(``<run>/eval_<split>[_ms][_flip][_sw].json`` and ``..._confusion.png`` by default).

Distribution (``--strategy``): with N replicas (MirroredStrategy over N GPUs, or N logical
CPUs) N images are predicted at a time, one per replica, each replica computing its image's
confusion matrix; the matrices are summed with ``strategy.reduce``. Reading and decoding the
images stays on the host in one tf.data pipeline, and multi-worker setups are not supported
(each worker would evaluate the whole split).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Optional

from exfuse_keras.config import OUTPUT_STRIDE, EvalConfig
from exfuse_keras.inference.arguments import add_protocol_arguments, protocol_from_arguments
from exfuse_keras.inference.loading import load_predictor, load_run

__all__ = ["load_run", "load_predictor", "evaluate", "format_table", "report_paths", "main"]

STRATEGIES = ("auto", "default", "mirrored")


def evaluate(cfg, model, split: str = "val", progress: bool = True, *, protocol: Optional[EvalConfig] = None,
             strategy=None, max_images: Optional[int] = None) -> dict:
    """The split's scores: mIoU, per-class IoU and accuracy, pixel and mean class accuracy.

    Args:
        cfg: the config (``data`` for the split, ``eval`` for the default protocol).
        model: a Keras model, a predictor callable (exfuse_keras/inference/loading.py) or a
            ``Segmenter``; under ``strategy`` created in its scope.
        split: ``"val"``, ``"train"`` or ``"test"``.
        progress: show a tqdm progress bar.
        protocol: the test-time protocol (scales, flip, sliding window); default ``cfg.eval``.
        strategy: a ``tf.distribute.Strategy`` to spread images over its replicas (module doc).
        max_images: evaluate only the split's first images (a quick check).

    Returns:
        ``scores_from_confusion``'s dict, the boundary IoU (``"boundary_miou"`` and per class
        ``"boundary_iou"``, exfuse_keras/metrics.py), ``"confusion_matrix"`` (int64 [C, C], rows = ground
        truth), ``"protocol"`` ({scales, flip, sliding_window}), ``"images"`` and ``"seconds"``.
    """
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from exfuse_keras.data.pipeline import make_dataset, num_examples
    from exfuse_keras.data.progress import bar_disable
    from exfuse_keras.inference.segmenter import Segmenter
    from exfuse_keras.metrics import boundary_counts, boundary_iou_from_counts, confusion_matrix, scores_from_confusion

    segmenter = model if isinstance(model, Segmenter) else Segmenter(model, cfg)
    protocol = Segmenter.resolve_protocol(protocol or cfg.eval)
    forward = segmenter.forward_function(protocol)
    num_classes, ignore_label = cfg.data.num_classes, cfg.data.ignore_label

    def image_confusion(image, mask):
        predictions, _ = forward(image)
        return (confusion_matrix(mask, predictions, num_classes, ignore_label),
                boundary_counts(mask, predictions, num_classes, ignore_label))

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if replicas > 1:
        # An image for a replica left without one at the end of the split: all ignore, counts nothing.
        size = [1, OUTPUT_STRIDE, OUTPUT_STRIDE]
        idle = (tf.fill(size + [3], 0.0), tf.fill(size, ignore_label))

        @tf.function(reduce_retracing=True)
        def replica_step(images, masks):
            per_replica = strategy.run(image_confusion, args=(images, masks))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        def step(group):
            group = group + [idle] * (replicas - len(group))
            images, masks = (strategy.experimental_distribute_values_from_function(
                lambda context, k=k: group[context.replica_id_in_sync_group][k]) for k in (0, 1))
            return replica_step(images, masks)
    else:
        def step(group):
            return image_confusion(*group[0])

    dataset = make_dataset(cfg, split, training=False, batch_size=1, return_meta=True)
    total = num_examples(cfg.data, split)
    if max_images is not None:
        dataset, total = dataset.take(max_images), min(total, max_images)
    # The confusion matrix and the boundary bands' intersections and unions, summed over images.
    matrix, bands = np.zeros((num_classes, num_classes), np.float64), np.zeros((2, num_classes), np.float64)

    def accumulate(group):
        for running, part in zip((matrix, bands), step(group)):
            running += part.numpy()

    started = time.perf_counter()
    group, count = [], 0
    for images, masks, meta in tqdm(dataset, total=total, disable=bar_disable(progress),
                                    desc=f"evaluating {split}", unit="img"):
        height, width = int(meta["size"][0, 0]), int(meta["size"][0, 1])
        group.append((images[:, :height, :width], masks[:, :height, :width]))
        count += 1
        if len(group) == replicas:
            accumulate(group)
            group = []
    if group:
        accumulate(group)
    scores = scores_from_confusion(matrix)
    scores.update(boundary_iou_from_counts(bands))
    scores["confusion_matrix"] = matrix.astype(np.int64)
    scores["protocol"] = dataclasses.asdict(protocol)
    scores["images"] = count
    scores["seconds"] = time.perf_counter() - started
    return scores


def format_table(scores: dict, class_names) -> str:
    lines = [f"{'class':<16}{'IoU':>8}{'acc':>8}{'bIoU':>8}"]
    for name, iou, acc, biou in zip(class_names, scores["iou"], scores["class_accuracy"], scores["boundary_iou"]):
        fmt = lambda v: "   -   " if v != v else f"{100 * v:7.2f}"  # noqa: E731  (NaN: absent class)
        lines.append(f"{name:<16}{fmt(iou):>8}{fmt(acc):>8}{fmt(biou):>8}")
    lines.append(f"mIoU {100 * scores['miou']:.2f}   boundary mIoU {100 * scores['boundary_miou']:.2f}   "
                 f"pixel accuracy {100 * scores['pixel_accuracy']:.2f}   "
                 f"mean class accuracy {100 * scores['mean_class_accuracy']:.2f}")
    return "\n".join(lines)


def protocol_tag(protocol: dict) -> str:
    """``""`` for single scale, else ``_ms`` (scales), ``_flip``, ``_sw`` (sliding window) joined."""
    tag = "" if protocol["scales"] == [1.0] else "_ms"
    tag += "_flip" if protocol["flip"] else ""
    return tag + ("_sw" if protocol["sliding_window"] else "")


def report_paths(weights: str, split: str, protocol: dict, output: Optional[str] = None) -> tuple[str, str]:
    """(JSON report, confusion picture) paths: ``output`` and ``<output stem>_confusion.png``, or by
    default ``eval_<split><tag>.json`` in the run folder (``<file stem>_eval_...`` beside a .keras file)."""
    if output is None:
        name = f"eval_{split}{protocol_tag(protocol)}.json"
        if os.path.isdir(weights):
            output = os.path.join(weights, name)
        else:
            stem = os.path.splitext(os.path.basename(weights))[0]
            output = os.path.join(os.path.dirname(os.path.abspath(weights)), f"{stem}_{name}")
    return output, os.path.splitext(output)[0] + "_confusion.png"


def write_report(path: str, scores: dict, class_names, split: str, weights: str) -> None:
    from exfuse_keras.metrics import BOUNDARY_DILATION_RATIO

    report = {"weights": weights, "split": split, "protocol": scores["protocol"], "images": scores["images"],
              "seconds": scores["seconds"], "images_per_second": scores["images"] / max(scores["seconds"], 1e-9),
              "miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
              "mean_class_accuracy": scores["mean_class_accuracy"], "boundary_miou": scores["boundary_miou"],
              "boundary_dilation_ratio": BOUNDARY_DILATION_RATIO,
              "per_class": {name: {"iou": None if iou != iou else float(iou),
                                   "accuracy": None if acc != acc else float(acc),
                                   "boundary_iou": None if biou != biou else float(biou)}
                            for name, iou, acc, biou in zip(class_names, scores["iou"], scores["class_accuracy"],
                                                            scores["boundary_iou"])},
              "confusion_matrix": scores["confusion_matrix"].tolist()}
    from exfuse_keras.atomic import atomic_write

    atomic_write(path, json.dumps(report, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a trained ExFuse model with the VOC metric "
                                                 "(mIoU over the split at the original resolution).")
    parser.add_argument("--weights", required=True,
                        help="a training run's folder, a .keras file or a SavedModel folder from export.py")
    parser.add_argument("--config", help="config (default: the run folder's config.yaml)")
    parser.add_argument("--split", default="val", help="val, train, or test (a folder dataset's data.folder.test_list)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    add_protocol_arguments(parser)
    parser.add_argument("--strategy", choices=STRATEGIES, default="default",
                        help="distribution strategy: images are spread over its replicas")
    parser.add_argument("--max-images", type=int, help="evaluate only the first N images (a quick check)")
    parser.add_argument("--output", help="JSON report path (default: <run>/eval_<split>[_ms][_flip][_sw].json); "
                                         "the confusion picture goes beside it as <stem>_confusion.png")
    args = parser.parse_args(argv)
    import exfuse_keras.task  # noqa: F401  (registers ExFuseImageSegmenter: --weights may be a task's .keras)

    from exfuse_keras.atomic import check_folder, os_error_line
    from exfuse_keras.config import ConfigError
    from exfuse_keras.data.checks import DataError
    from exfuse_keras.evaluation.visualize import save_confusion_picture
    from exfuse_keras.training.strategy import select_strategy

    from exfuse_keras.inference.segmenter import Segmenter

    strategy = select_strategy(args.strategy)
    try:
        with strategy.scope():
            cfg, model = load_predictor(args.weights, args.config, args.set)
        if args.output is not None:
            check_folder(os.path.dirname(os.path.abspath(args.output)), "--output")
    except (ConfigError, OSError, ValueError) as err:
        print(f"error: {os_error_line(err) if isinstance(err, OSError) else err}", file=sys.stderr)
        return 2
    print(f"strategy: {type(strategy).__name__}, replicas: {strategy.num_replicas_in_sync}")
    protocol = Segmenter.resolve_protocol(cfg.eval, *protocol_from_arguments(args), args.sliding_window)
    try:
        scores = evaluate(cfg, model, args.split, protocol=protocol, strategy=strategy, max_images=args.max_images)
    except (DataError, ConfigError) as err:  # a bad file; a split the dataset has not
        print(f"error: {err}", file=sys.stderr)
        return 2
    protocol = scores["protocol"]
    print(f"{args.split}: {scores['images']} images, scales {protocol['scales']}, flip {protocol['flip']}, "
          f"sliding window {protocol['sliding_window']}, {scores['images'] / max(scores['seconds'], 1e-9):.2f} img/s")
    print(format_table(scores, cfg.data.class_names))
    report, picture = report_paths(args.weights, args.split, protocol, args.output)
    try:
        write_report(report, scores, cfg.data.class_names, args.split, args.weights)
        save_confusion_picture(picture, scores["confusion_matrix"], cfg.data.class_names)
    except OSError as err:  # a full disk, a read-only folder
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    print(f"report: {report}\nconfusion matrix: {picture}")
    return 0
