"""``python -m exfuse_keras.ablation``: runs the ablation sweep and writes its report (see __init__)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time


def parse_args(argv=None):
    from exfuse_keras.ablation.rows import PRESETS
    from exfuse_keras.ablation.sweep import SweepSettings  # its defaults are the CLI's

    parser = argparse.ArgumentParser(prog="python -m exfuse_keras.ablation",
                                     description="The paper's Table 3 and Table 4 ablations as one sweep.")
    parser.add_argument("--table", default="all", metavar="{3,4,dap,ecre,controls,all}[,...]",
                        help="which table's rows (all: Tables 3 and 4; dap: where DAP's votes come from; ecre: how "
                             "ECRE's auxiliary target is built; controls: the benchmark's positive controls); a "
                             "comma list reports several tables with one pooled noise estimate")
    parser.add_argument("--rows", default=None, metavar="KEY[,KEY...]",
                        help="only these rows of --table, by their key (e.g. 5,6 for the DAP pair; the table's "
                             "rows and keys are in docs/ablation.md)")
    parser.add_argument("--config-set", default="cpu", choices=PRESETS,
                        help="paper: configs/ablation/ as shipped; cpu: the same switches on the quick-start-size "
                             "network (exfuse_keras/ablation/rows.py)")
    parser.add_argument("--data", default="configs/data/scenes_128.yaml",
                        help="dataset config (configs/data/: scenes, shapes, voc)")
    parser.add_argument("--seeds", type=int, default=SweepSettings.seeds, help="seeds 0..N-1 for every row")
    parser.add_argument("--steps", type=int, default=SweepSettings.steps,
                        help="training steps per run (the equal budget; the default is calibrated for the cpu "
                             "preset on scenes_128: the GCN baseline reaches 0.35-0.75 val mIoU, docs/ablation.md)")
    parser.add_argument("--max-seconds", type=float, default=None, help="optional wall-clock cap per run")
    parser.add_argument("--pretrain", default=None, choices=("presence", "config"),
                        help="presence: SS as class-presence pretraining on the dataset (default for the built-in "
                             "data); config: the rows' model.backbone.weights (default otherwise)")
    parser.add_argument("--pretrain-steps", type=int, default=SweepSettings.pretrain_steps,
                        help="steps of each presence pretraining")
    parser.add_argument("--output", default=SweepSettings.output, help="the sweep's folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run")
    parser.add_argument("--committed", action="append", default=None, metavar="RESULTS_JSON",
                        help="a results.json of earlier calls (e.g. committed under docs/results/; repeatable): its "
                             "runs count as finished, so the sweep continues where it stopped on another machine")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the report of the runs finished so far (e.g. of a running sweep)")
    parser.add_argument("--add-confusion", action="store_true",
                        help="train nothing: add the val confusion matrix (the controls' context and shape accuracy "
                             "need it) to each finished run folder whose result.json lacks it, from its last.keras; "
                             "then write the report")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 rows, 1 seed, a few steps on a tiny generated scenes set")
    return parser.parse_args(argv)


def _quick_settings(args, settings):
    """--quick: rows 1 and 7, seed 0, 4 steps, 64x64 images, 16 + 4 generated under --output."""
    from exfuse_keras.data.scenes import generate_scenes_dataset

    root = os.path.join(args.output, "quick_data")
    tiny = {"size": 64, "num_train": 16, "num_val": 4}
    generate_scenes_dataset(root, **tiny, verbose=False)
    # data.synthetic as well: a data config that names its generator's arguments (scenes_128.yaml's
    # size) would otherwise regenerate the full 3,500-image set over the tiny one.
    overrides = [f"data.root={root}", *(f"data.synthetic.{key}={value}" for key, value in tiny.items()),
                 "data.crop_size=64", "data.shuffle_buffer=16", "train.warmup_steps=1", "train.val_batch_size=4",
                 *args.set]
    return dataclasses.replace(settings, seeds=1, steps=4, pretrain_steps=4, overrides=overrides)


def main(argv=None) -> int:
    from exfuse_keras.ablation import report
    from exfuse_keras.ablation.rows import QUICK_ROWS, rows_for
    from exfuse_keras.ablation.sweep import SweepSettings, add_confusion_matrix, run_sweep
    from exfuse_keras.config import ConfigError, load_config

    args = parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        print("error: --seeds and --steps must be at least 1", file=sys.stderr)
        return 2
    try:
        dataset = load_config(args.data).data.dataset
    except ConfigError as err:
        print(f"error: --data: {err}", file=sys.stderr)
        return 2
    pretrain = args.pretrain or ("presence" if dataset in ("scenes", "shapes") else "config")
    settings = SweepSettings(data=args.data, preset=args.config_set, steps=args.steps, seeds=args.seeds,
                             output=args.output, max_seconds=args.max_seconds, pretrain=pretrain,
                             pretrain_steps=args.pretrain_steps, overrides=list(args.set), committed=args.committed)
    try:
        rows = rows_for(args.table)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.quick:
        settings, rows = _quick_settings(args, settings), QUICK_ROWS
    if args.rows:
        keys = [key.strip() for key in args.rows.split(",") if key.strip()]
        unknown = [key for key in keys if key not in [row.key for row in rows]]
        if unknown:
            print(f"error: --rows: no row {', '.join(unknown)} in --table {args.table}; its rows are "
                  f"{', '.join(row.key for row in rows)}", file=sys.stderr)
            return 2
        rows = tuple(row for row in rows if row.key in keys)
    os.makedirs(args.output, exist_ok=True)
    started = time.perf_counter()
    try:
        if args.add_confusion:
            for seed in range(settings.seeds):
                for row in rows:
                    if add_confusion_matrix(row, settings, seed) is not None:
                        print(f"{row.run_name} seed {seed}: confusion matrix added", flush=True)
        results = run_sweep(rows, settings, verbose=0 if args.quick else 2,
                            report_only=args.report_only or args.add_confusion)
    except ValueError as err:  # train.py's one-line user errors: a config, data, weights or model file
        from exfuse_keras.backbones.weights import WeightsError  # imports keras: only on this error path
        from exfuse_keras.data.checks import DataError
        from exfuse_keras.saving import ModelFileError

        if not isinstance(err, (ConfigError, DataError, WeightsError, ModelFileError)):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = report.summarize(rows, results, settings.seeds, load_config(settings.data).data.class_names)
    record = {**dataclasses.asdict(settings), "table": args.table, "quick": args.quick,
              "command": " ".join(["python -m exfuse_keras.ablation", *(argv if argv is not None else sys.argv[1:])]),
              "sweep_seconds_this_call": time.perf_counter() - started}
    report.write_results(os.path.join(args.output, "results.json"), summary, results, record)
    table = report.format_table(summary)
    with open(os.path.join(args.output, "table.md"), "w", encoding="utf-8") as f:
        f.write(table)
    report.plot_deltas(os.path.join(args.output, "ablation.png"), summary)
    curves = report.plot_curves(os.path.join(args.output, "curves.png"), rows, results, settings.seeds)
    print(table)
    print(f"wrote {args.output}/results.json, table.md, ablation.png" + (" and curves.png" if curves else ""))
    return 0


if __name__ == "__main__":
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()  # before main() imports TensorFlow (exfuse_keras/onednn.py)
    sys.exit(main())
