"""``python -m exfuse_keras.ablation.calibrate``: one ablation row's learning curve.

The scenes benchmark is calibrated when the GCN baseline (row 1) lands between 0.35 and 0.75
val mIoU within the sweep's per-run budget (docs/ablation.md, "Calibration"). This command
measures what that budget has to be: it trains one row of a size preset exactly as the sweep
would (the same config, the same presence pretraining), but validates every ``--every`` steps,
and prints and saves the val mIoU after each::

    python -m exfuse_keras.ablation.calibrate --row 1 --steps 4000 --every 500 --pretrain-steps 1000

The learning-rate schedule spans ``--steps``, so the curve shows where a sweep of that many
steps per run would be at each point, not where a shorter sweep would end (a shorter sweep
decays sooner and ends a little higher than the curve at its length). Writes
``<output>/curve.json`` and leaves the run directory under ``<output>/run``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time


def parse_args(argv=None):
    from exfuse_keras.ablation.rows import PRESETS, TABLE3
    from exfuse_keras.ablation.sweep import SweepSettings  # the sweep's budget is the curve's default

    parser = argparse.ArgumentParser(prog="python -m exfuse_keras.ablation.calibrate",
                                     description="One ablation row's learning curve (val mIoU every N steps).")
    parser.add_argument("--row", default="1", choices=[row.key for row in TABLE3], help="Table 3 row")
    parser.add_argument("--config-set", default="cpu", choices=PRESETS, help="size preset (as in the sweep)")
    parser.add_argument("--data", default="configs/data/scenes_128.yaml", help="dataset config")
    parser.add_argument("--steps", type=int, default=SweepSettings.steps, help="training steps (the schedule's length)")
    parser.add_argument("--every", type=int, default=500, help="validate every this many steps")
    parser.add_argument("--pretrain-steps", type=int, default=SweepSettings.pretrain_steps,
                        help="steps of the presence pretraining (0: from scratch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/calibration", help="folder for the run and curve.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable)")
    return parser.parse_args(argv)


def learning_curve(history_csv: str, every: int) -> list:
    """``[{"steps", "val_miou", "loss"}]`` from a run's history.csv (one row per ``every`` steps)."""
    with open(history_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    key = "val_miou" if "val_miou" in rows[0] else "val_logits_miou"  # one output or several
    return [{"steps": (int(r["epoch"]) + 1) * every, "val_miou": float(r[key]), "loss": float(r["loss"])}
            for r in rows]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.steps < 1 or args.every < 1 or args.steps % args.every:
        print(f"error: --steps ({args.steps}) must be a positive multiple of --every ({args.every})",
              file=sys.stderr)
        return 2
    from exfuse_keras.ablation.rows import TABLE3
    from exfuse_keras.ablation.sweep import SweepSettings, row_config, with_presence_pretraining
    from exfuse_keras.config import ConfigError
    from exfuse_keras.training.run import sized_by_data, train

    row = next(r for r in TABLE3 if r.key == args.row)
    settings = SweepSettings(data=args.data, preset=args.config_set, steps=args.steps, seeds=1,
                             output=args.output, pretrain_steps=args.pretrain_steps, overrides=list(args.set))
    run_dir = os.path.join(args.output, "run")
    try:  # a folder dataset's crop_size: auto measured before the pretraining, which needs it too
        cfg, sized = sized_by_data(row_config(row, settings, args.seed), run_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in sized:
        print(line, flush=True)
    started = time.perf_counter()
    pretraining = None
    if args.pretrain_steps > 0:
        try:  # a finished pretraining of another length under --output is refused, not reused
            cfg, pretraining = with_presence_pretraining(cfg, row, args.pretrain_steps,
                                                         os.path.join(args.output, "pretraining"), verbose=0)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"presence pretraining: {args.pretrain_steps} steps, {pretraining['seconds']:.0f} s", flush=True)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=args.steps // args.every,
                                                             steps_per_epoch=args.every))
    trained = train(cfg, run_dir, "auto", verbose=0)
    curve = learning_curve(os.path.join(run_dir, "history.csv"), args.every)
    print(f"row {row.key} ({row.label}), {args.config_set} preset, {args.data}:")
    print("| steps | val mIoU | train loss |\n|---|---|---|")
    for point in curve:
        print(f"| {point['steps']} | {point['val_miou']:.4f} | {point['loss']:.3f} |")
    record = {"row": row.key, "config_set": args.config_set, "data": args.data, "seed": args.seed,
              "steps": args.steps, "every": args.every, "pretrain_steps": args.pretrain_steps,
              "overrides": list(args.set), "curve": curve, "train_seconds": trained["train_seconds"],
              "pretraining_seconds": pretraining["seconds"] if pretraining else 0.0,
              "seconds": time.perf_counter() - started}
    with open(os.path.join(args.output, "curve.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {args.output}/curve.json ({record['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()  # before main() imports TensorFlow (exfuse_keras/onednn.py)
    sys.exit(main())
