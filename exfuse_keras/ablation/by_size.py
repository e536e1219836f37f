"""Context accuracy by object size: is a nucleus told from a disc by its ring or by its size?

The positive controls' context and shape accuracy (report.py, ``pair_accuracies``) pool every
object. A model whose window cannot reach a nucleus's ring can still tell it from a disc if the
two differ in something it can see, such as size. This scores each scenes object of the four
classes of ``scenes.LOOK_ALIKES`` (nucleus and disc, boxed and square) on its own: the val
scenes are rendered again from their seeds, which gives every object's parts and the pixels no
later object hides, and each run's last weights predict the val images. Objects are binned by
their equivalent radius (the radius of a disc of the part's drawn area, px); per bin and run,
context accuracy is ``pair_accuracies``' (of the pixels called the class or its look-alike, the
share called the class; the four classes weighted equally), over the bin's objects.

If context accuracy stays high in a bin where both members of a pair occur, the model tells them
apart within its window; where one member is rare, size alone can tell them.

Usage::

    python -m exfuse_keras.ablation.by_size --table controls --seeds 2 --output runs/ablation_controls

Writes ``context_by_size.json`` and ``.md`` under ``--output``. It needs the runs' folders (their
last weights), not only a committed results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import numpy as np

# Equivalent-radius bins, as fractions of the image side (a scene's objects have radii of 10-30%).
BIN_EDGES = (0.0, 0.06, 0.10, 0.14, 0.20, 1.0)


def scene_objects(meta: dict, image_index: int) -> tuple[list, np.ndarray]:
    """``([(class name, equivalent radius px, bool [S, S] visible pixels), ...], mask)`` of the val scene
    ``image_index`` for the four classes of ``LOOK_ALIKES``, rendered again from the arguments in
    the dataset's ``meta`` (``scenes_meta.json``); with its mask, for the caller's check."""
    from exfuse_keras.data.scenes import PAIR_PARTNER, SCENES_CLASSES, render_scene
    from exfuse_keras.data.synthetic import SPLIT_CODES

    drawn = []
    rng = np.random.default_rng([meta["args"]["seed"], SPLIT_CODES["val"], image_index])
    _, mask = render_scene(rng, meta["args"]["size"], drawn, meta["args"].get("look_alike_sizes", "independent"))
    out = []
    for record in drawn:
        for (cls, part), visible in zip(record["parts"], record["visible"]):
            name = SCENES_CLASSES[cls]
            if name in PAIR_PARTNER and visible.any():
                out.append((name, float(np.sqrt(part.sum() / np.pi)), visible))
    return out, mask


def object_counts(prediction: np.ndarray, objects: Sequence, class_names: Sequence[str]) -> list:
    """``[(class name, equivalent radius, pixels called the class, called its look-alike), ...]``."""
    from exfuse_keras.data.scenes import PAIR_PARTNER

    return [(name, radius, int(np.sum(prediction[visible] == class_names.index(name))),
             int(np.sum(prediction[visible] == class_names.index(PAIR_PARTNER[name]))))
            for name, radius, visible in objects]


def context_by_size(counts: Sequence, size: int, min_objects: int = 5) -> list:
    """Per ``BIN_EDGES`` bin (fractions of the scenes' side ``size``): ``{"bin": [low, high] px,
    "objects": {class: n}, "pairs": [context class, ...], "context accuracy"}``.

    Context accuracy: per class, its objects' pixels called the class over those called the
    class or its look-alike, pooled over the bin's objects; the mean over the classes of the pairs
    whose two members both have ``min_objects`` objects in the bin (``pairs`` names them by their
    context class; None when no pair has).
    """
    from exfuse_keras.data.scenes import LOOK_ALIKES

    out = []
    for low, high in zip(BIN_EDGES[:-1], BIN_EDGES[1:]):
        inside = [c for c in counts if low * size <= c[1] < high * size]
        objects, shares = {}, {}
        for name in [*LOOK_ALIKES, *LOOK_ALIKES.values()]:
            mine = [c for c in inside if c[0] == name]
            objects[name] = len(mine)
            own, other = sum(c[2] for c in mine), sum(c[3] for c in mine)
            shares[name] = own / (own + other) if own + other else None
        pairs = [pair for pair in LOOK_ALIKES.items()
                 if all(objects[m] >= min_objects and shares[m] is not None for m in pair)]
        used = [shares[n] for pair in pairs for n in pair]
        out.append({"bin": [low * size, high * size], "objects": objects, "pairs": [c for c, _ in pairs],
                    "context accuracy": float(np.mean(used)) if used else None})
    return out


def score_run(cfg, weights: str, max_images=None) -> tuple[list, int]:
    """``(object_counts of every val image, the scenes' side in px)`` for the model at ``weights``
    (a ``.keras`` file), predicted under the config's test-time protocol (``cfg.eval``), as
    ``evaluate`` does."""
    import keras
    from tqdm import tqdm

    import exfuse_keras.layers  # noqa: F401  (registers the custom layers for loading)
    from exfuse_keras.config import ConfigError
    from exfuse_keras.data.pipeline import make_dataset
    from exfuse_keras.data.scenes import META_FILENAME
    from exfuse_keras.inference.segmenter import Segmenter

    meta_path = os.path.join(cfg.data.root, META_FILENAME)
    if not os.path.isfile(meta_path):
        raise ConfigError(f"{meta_path}: missing; context by size needs the scenes benchmark's own data")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    forward = Segmenter(keras.models.load_model(weights, compile=False), cfg).forward_function(cfg.eval)
    dataset = make_dataset(cfg, "val", training=False, batch_size=1, return_meta=True)
    if max_images is not None:
        dataset = dataset.take(max_images)
    counts = []
    for image, mask, info in tqdm(dataset, desc=os.path.basename(os.path.dirname(weights)), unit="img",
                                  total=max_images or meta["args"]["num_val"], leave=False):
        name = os.path.basename(info["file_name"][0].numpy().decode())
        height, width = (int(v) for v in info["size"][0])
        objects, rendered = scene_objects(meta, int(os.path.splitext(name)[0].rsplit("_", 1)[1]))
        if not np.array_equal(rendered, mask[0, :height, :width].numpy()):
            raise ConfigError(f"{cfg.data.root}: val image {name} is not what the scenes generator renders "
                              "from its meta file's seed now; regenerate the data")
        prediction = forward(image[:, :height, :width])[0][0].numpy()
        counts += object_counts(prediction, objects, cfg.data.class_names)
    keras.backend.clear_session()
    return counts, int(meta["args"]["size"])


def format_table(scored: dict) -> str:
    """Markdown: per bin, the objects of each class, the pairs counted (by their context class) and
    each row's context accuracy (mean and per seed)."""
    names = list(next(iter(scored.values()))[0]["by_size"][0]["objects"])
    rows = list(scored)
    lines = ["| radius (px) | objects (" + ", ".join(names) + ") | pairs | "
             + " | ".join(f"context accuracy, {r}" for r in rows) + " |",
             "|---" * (3 + len(rows)) + "|"]
    for b in range(len(BIN_EDGES) - 1):
        first = scored[rows[0]][0]["by_size"][b]
        cells = []
        for r in rows:
            values = [run["by_size"][b]["context accuracy"] for run in scored[r]]
            if None in values:
                cells.append("–")
            else:
                cells.append(f"{100 * np.mean(values):.1f} (" + " / ".join(f"{100 * v:.1f}" for v in values) + ")")
        low, high = first["bin"]
        lines.append(f"| {low:.0f}–{high:.0f} | " + " / ".join(str(first["objects"][n]) for n in names) + " | "
                     + (", ".join(first["pairs"]) or "–") + " | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exfuse_keras.ablation.by_size",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--table", default="controls", help="the ablation table whose rows to score")
    parser.add_argument("--config-set", default="cpu", choices=("paper", "cpu"))
    parser.add_argument("--data", default="configs/data/scenes_128.yaml")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4000, help="the sweep's budget (its run folders' names)")
    parser.add_argument("--output", required=True, help="the sweep's folder; writes context_by_size.json/.md there")
    parser.add_argument("--max-images", type=int, default=None, help="only the first val images (a quick check)")
    args = parser.parse_args(argv)

    from exfuse_keras.ablation.rows import rows_for
    from exfuse_keras.ablation.sweep import SweepSettings, finished, row_config, run_dir
    from exfuse_keras.config import ConfigError

    settings = SweepSettings(preset=args.config_set, data=args.data, seeds=args.seeds, steps=args.steps,
                             output=args.output)
    scored = {}
    try:
        for row in rows_for(args.table):
            for seed in range(args.seeds):
                if finished(row, settings, seed) is None:
                    continue
                cfg = row_config(row, settings, seed)
                counts, size = score_run(cfg, os.path.join(run_dir(row, settings, seed), "last.keras"),
                                         args.max_images)
                scored.setdefault(row.key, []).append({"seed": seed, "by_size": context_by_size(counts, size)})
                print(f"{row.key} seed {seed}: scored", flush=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not scored:
        print(f"error: {args.output}: no finished run of --table {args.table}", file=sys.stderr)
        return 2
    table = format_table(scored)
    with open(os.path.join(args.output, "context_by_size.json"), "w", encoding="utf-8") as f:
        json.dump({"command": " ".join(["python -m exfuse_keras.ablation.by_size", *(argv or sys.argv[1:])]),
                   "bin_edges_px": [e * size for e in BIN_EDGES], "rows": scored}, f, indent=2)
    with open(os.path.join(args.output, "context_by_size.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()
    sys.exit(main())
