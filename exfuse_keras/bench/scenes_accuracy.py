"""Accuracy of the quick-start-sized models on the scenes benchmark at one step budget, per seed:
ExFuse (ResNet, ``configs/quickstart.yaml``), ExFuse-MobileNetV3 (``configs/quickstart_mobilenetv3.yaml``)
and keras-hub's SegFormer-B0 (``peer_segformer.py accuracy``, in its own environment).

Usage::

    python -m exfuse_keras.bench.scenes_accuracy --models quickstart,quickstart_mobilenetv3,segformer_b0 \\
        --seeds 2 --steps 2000 --output runs/scenes_accuracy [--data configs/data/scenes_128.yaml]

Every model trains from random weights (as every model here must, offline) on the same data
(``--data``: crops, scale range and batches from our pipeline), the same number of steps, the
same batch, optimiser and schedule (the quick start's: AdamW 0.005, 100 warm-up steps, poly
decay; no time budget), each seed giving the same data order to every model. The ExFuse models
train with their own auxiliary losses (SS heads, ECRE), SegFormer with its single output's
cross-entropy. ``--peer-learning-rate R`` trains the peers (not the ExFuse models) at their own
peak rate R instead, in runs named for it (``segformer_b0_lr0.0005``): a transformer from
scratch may need a lower rate than the recipe's. Each run is scored on the val split (single
scale) with evaluate.py's protocol: mIoU and per-class IoU. A run whose ``result.json`` exists
is skipped, so the command resumes; ``results.json`` collects every run under ``--output`` with
the CPU it ran on (a later call, say at ``--peer-learning-rate``, adds its runs and its command to
the earlier ones'), and a table of them is printed (mean and the two-sided 95% t interval over
seeds of each model's mIoU).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time
from typing import Optional

from exfuse_keras.atomic import atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXFUSE_MODELS = {"quickstart": "configs/quickstart.yaml", "quickstart_mobilenetv3": "configs/quickstart_mobilenetv3.yaml"}
PEERS = {"segformer_b0": ".venv-peer/bin/python"}
STEPS_PER_EPOCH = 200


def run_overrides(steps: int, seed: int) -> list[str]:
    """The overrides every model's run shares: the budget in steps (no time budget) and the seed."""
    if steps % STEPS_PER_EPOCH:
        raise ValueError(f"--steps must be a multiple of {STEPS_PER_EPOCH}, got {steps}")
    return [f"train.epochs={steps // STEPS_PER_EPOCH}", f"train.steps_per_epoch={STEPS_PER_EPOCH}",
            "train.max_train_seconds=null", f"train.seed={seed}"]


def train_exfuse(name: str, data: str, steps: int, seed: int, run_dir: str) -> dict:
    from exfuse_keras.config import load_config_stack
    from exfuse_keras.evaluation.evaluate import evaluate
    from exfuse_keras.inference.loading import load_run
    from exfuse_keras.training.run import train

    cfg = load_config_stack([os.path.join(ROOT, EXFUSE_MODELS[name]), data], run_overrides(steps, seed))
    result = train(cfg, run_dir, verbose=0)
    # The weights at the end of the budget (last.keras), as for the peer: no pick of the best epoch.
    _, last = load_run(os.path.join(run_dir, "last.keras"), os.path.join(run_dir, "config.yaml"))
    scores = evaluate(cfg, last, "val", progress=False)
    return {"train_seconds": result["train_seconds"], "steps_run": result["steps_run"],
            "params": int(last.count_params()), "val_miou": scores["miou"],
            "per_class_iou": dict(zip(cfg.data.class_names, map(float, scores["iou"])))}


def train_peer(name: str, data: str, steps: int, seed: int, run_dir: str,
               learning_rate: Optional[float] = None) -> dict:
    python = os.path.join(ROOT, PEERS[name])
    if not os.path.isfile(python):
        raise FileNotFoundError(f"{python}: the peer's environment is missing (make bench-env)")
    command = [python, os.path.join(ROOT, "exfuse_keras", "bench", "peer_segformer.py"), "accuracy",
               "--data", data, "--steps", str(steps), "--seed", str(seed), "--output", run_dir]
    if learning_rate is not None:
        command += ["--learning-rate", repr(learning_rate)]
    env = dict(os.environ, EXFUSE_ROOT=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_label(name: str, peer_learning_rate: Optional[float]) -> str:
    """A run's model label and folder name: a peer trained at its own learning rate is named for it."""
    if name in PEERS and peer_learning_rate is not None:
        return f"{name}_lr{peer_learning_rate:g}"
    return name


def interval(values) -> tuple[float, float]:
    """Mean and the half-width of the two-sided 95% t interval (n - 1 degrees of freedom)."""
    import numpy as np
    from scipy import stats

    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(values.mean()), None
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean()), float(half)


def table(runs: list[dict], models: list[str]) -> str:
    lines = ["| model | parameters | seeds | val mIoU (mean ± 95% CI half-width) | per seed | train s/run |",
             "|---|---|---|---|---|---|"]
    for name in models:
        mine = [r for r in runs if r["model"] == name]
        if not mine:
            continue
        mean, half = interval([100 * r["val_miou"] for r in mine])
        seconds = sum(r["train_seconds"] for r in mine) / len(mine)
        per_seed = ", ".join(f"{100 * r['val_miou']:.1f}" for r in mine)
        spread = "(1 seed)" if half is None else f"± {half:.1f}"
        lines.append(f"| {name} | {mine[0]['params'] / 1e6:.2f} M | {len(mine)} | {mean:.1f} {spread} | "
                     f"{per_seed} | {seconds:.0f} |")
    return "\n".join(lines)


def read_result(path: str, model: str, seed: int) -> tuple[Optional[dict], Optional[str]]:
    """(the finished result of ``model`` seed ``seed`` in ``path``, None) or (None, why it is not)."""
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except (OSError, ValueError) as error:
        return None, f"not a readable result ({error})"
    if not isinstance(run, dict) or run.get("model") != model or run.get("seed") != seed:
        return None, f"expected the result of model {model} seed {seed}"
    return run, None


def collected_runs(output: str, warn: bool = True) -> list[dict]:
    """Every finished run under ``output`` (``<model>/seed<N>/result.json``), by model and seed.
    A file that cannot be read, or that names another model or seed than its folder (a copy, a
    renamed folder), is left out, with a warning on stderr if ``warn``, instead of stopping the report."""
    runs = []
    for path in sorted(glob.glob(os.path.join(output, "*", "seed*", "result.json"))):
        seed_dir = os.path.basename(os.path.dirname(path))
        model = os.path.basename(os.path.dirname(os.path.dirname(path)))
        if not re.fullmatch(r"seed(0|[1-9]\d*)", seed_dir):
            continue
        run, problem = read_result(path, model, int(seed_dir[4:]))
        if problem:
            if warn:
                print(f"warning: {path}: {problem}; left out", file=sys.stderr)
            continue
        runs.append(run)
    return sorted(runs, key=lambda r: (r["model"], r["seed"]))


def data_path(path: str) -> str:
    """A dataset config's path as results record it: relative to the project root when inside it
    (``configs/data/scenes_128.yaml``), absolute otherwise; a relative ``path`` is the working
    directory's."""
    real = os.path.realpath(path)
    inside = os.path.commonpath([real, os.path.realpath(ROOT)]) == os.path.realpath(ROOT)
    return os.path.relpath(real, os.path.realpath(ROOT)) if inside else real


def other_budgets(runs: list[dict], steps: int, data: str) -> list[str]:
    """``model seed N: steps=..., data=...`` for each run trained with another budget or data than
    ``steps`` and ``data`` (``data_path``; a run's recorded relative path is the project root's)."""
    wanted = os.path.realpath(os.path.join(ROOT, data_path(data)))
    return [f"{r['model']} seed {r['seed']}: steps={r.get('steps')}, data={r.get('data')}" for r in runs
            if r.get("steps") != steps or os.path.realpath(os.path.join(ROOT, str(r.get("data")))) != wanted]


def write_results(output: str, command: str) -> list[dict]:
    """Writes ``output/results.json``: every run under ``output`` (``collected_runs``) and every
    command that trained them (the earlier calls' kept, a new command string added); returns the runs."""
    path = os.path.join(output, "results.json")
    commands = []
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                earlier = json.load(f)
            listed = earlier.get("commands") or ([earlier["command"]] if earlier.get("command") else [])
            if not isinstance(listed, list):
                raise ValueError("its commands are not a list")
            commands = listed
        except (OSError, ValueError, AttributeError) as error:
            print(f"warning: {path}: not a readable results file ({error}); its command list starts anew "
                  "(the runs are collected from their folders)", file=sys.stderr)
    if command not in commands:
        commands.append(command)
    runs = collected_runs(output, warn=False)
    atomic_write(path, json.dumps({"commands": commands, "runs": runs}, indent=2))
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="quickstart,quickstart_mobilenetv3,segformer_b0")
    parser.add_argument("--data", default="configs/data/scenes_128.yaml")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--output", default="runs/scenes_accuracy")
    parser.add_argument("--peer-learning-rate", type=float, default=None,
                        help="the peers' peak learning rate instead of the shared recipe's (quickstart.yaml's "
                             "train.learning_rate); their runs "
                             "are then named e.g. segformer_b0_lr0.0005")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in EXFUSE_MODELS and m not in PEERS]
    if unknown:
        print(f"error: --models: unknown {', '.join(unknown)}; expected some of "
              f"{', '.join([*EXFUSE_MODELS, *PEERS])}", file=sys.stderr)
        return 2
    from exfuse_keras.machine import cpu_record

    data = os.path.abspath(args.data)
    labels = {name: run_label(name, args.peer_learning_rate) for name in models}
    differ = other_budgets(collected_runs(args.output), args.steps, args.data)
    if differ:
        print(f"error: {args.output} holds runs of another budget or data ({'; '.join(differ)}), this call "
              f"steps={args.steps}, data={args.data}: give this call its own --output", file=sys.stderr)
        return 2
    # A result file of this call's runs that is not its run's result would be skipped as finished.
    for seed in range(args.seeds):
        for label in labels.values():
            path = os.path.join(args.output, label, f"seed{seed}", "result.json")
            problem = os.path.isfile(path) and read_result(path, label, seed)[1]
            if problem:
                print(f"error: {path}: {problem}; move it away to train this run again", file=sys.stderr)
                return 2
    runs = []
    for seed in range(args.seeds):
        for name in models:
            run_dir = os.path.join(args.output, labels[name], f"seed{seed}")
            path = os.path.join(run_dir, "result.json")
            if not os.path.isfile(path):
                os.makedirs(run_dir, exist_ok=True)
                started = time.perf_counter()
                trained = (train_exfuse(name, data, args.steps, seed, run_dir) if name in EXFUSE_MODELS
                           else train_peer(name, data, args.steps, seed, run_dir, args.peer_learning_rate))
                result = {"model": labels[name], "seed": seed, "steps": args.steps, "data": data_path(args.data),
                          **trained, "cpu": cpu_record(),
                          "wall_seconds": time.perf_counter() - started}
                atomic_write(path, json.dumps(result, indent=2))
            with open(path, encoding="utf-8") as f:
                runs.append(json.load(f))
            print(f"{labels[name]} seed {seed}: val mIoU {runs[-1]['val_miou']:.4f} "
                  f"({runs[-1]['train_seconds']:.0f} s training)", flush=True)
    command = " ".join(["python -m exfuse_keras.bench.scenes_accuracy", *(argv or sys.argv[1:])])
    every = write_results(args.output, command)
    earlier = sorted({r["model"] for r in every} - set(labels.values()))
    print(table(every, [*labels.values(), *earlier]))
    return 0


if __name__ == "__main__":
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()
    sys.exit(main())
