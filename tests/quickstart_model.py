"""The trained quick-start model the evaluation and export tests share, trained once per cache key.

``trained_quickstart(recipe)`` runs ``train.py`` on ``configs/quickstart.yaml`` (the README's main
job) in a subprocess and caches the run directory under ``.cache/quickstart/<key>`` (or
``$EXFUSE_TEST_CACHE``). The key hashes the recipe and every source file that changes what
training produces, so a code change retrains and a rerun of the suite does not. A file lock makes
concurrent test processes wait for one training run. Recipes (both without the 10-minute time
budget, so the model does not depend on how busy the machine is):

- ``"fixture"`` (``make test``): the quick-start network and data, its schedule compressed into
  4 epochs of 150 steps (600 of the recipe's 6,000). What its tests need is a model that has
  left the all-background start, so that argmax agreements (TFLite float16, dynamic range, int8;
  SavedModel) compare real decisions and class boundaries, and the exported model finds several
  classes; not the quick start's accuracy. Measured on a 2-core AMD Zen 3 in two trainings: val mIoU
  0.208 and 0.192 (0.13 is all background); on the second, TFLite agreement with Keras float16
  0.9999, dynamic range 0.9943, int8 0.9796 (181 s of training).
- ``"full"`` (``make test-slow``): the quick start's own 30 epochs of 200 steps, for its accuracy floor.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart.yaml")
RECIPES = {
    "fixture": ("train.max_train_seconds=null", "train.epochs=4", "train.steps_per_epoch=150"),
    "full": ("train.max_train_seconds=null",),
}
# What training's result depends on (evaluation/export/inference code is deliberately left out).
TRAINING_SOURCES = ("train.py", "exfuse_keras/config.py", "exfuse_keras/model.py", "exfuse_keras/losses.py",
                    "exfuse_keras/metrics.py", "exfuse_keras/layers", "exfuse_keras/backbones",
                    "exfuse_keras/data", "exfuse_keras/training")


def cache_key(recipe: str = "fixture") -> str:
    digest = hashlib.sha256()
    digest.update(repr(RECIPES[recipe]).encode())
    paths = [CONFIG]
    for entry in TRAINING_SOURCES:
        full = os.path.join(ROOT, entry)
        if os.path.isdir(full):
            paths += sorted(os.path.join(d, f) for d, _, files in os.walk(full) for f in files if f.endswith(".py"))
        else:
            paths.append(full)
    for path in paths:
        digest.update(os.path.relpath(path, ROOT).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def cache_root() -> str:
    return os.environ.get("EXFUSE_TEST_CACHE", os.path.join(ROOT, ".cache"))


def trained_quickstart(recipe: str = "fixture") -> dict:
    """``{"run_dir", "data_root", "val_miou", "train_seconds", "epochs"}`` of the cached run."""
    base = os.path.join(cache_root(), "quickstart")
    run_dir = os.path.join(base, f"{recipe}-{cache_key(recipe)}")
    data_root = os.path.join(cache_root(), "shapes")
    result_path = os.path.join(run_dir, "fixture.json")
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(result_path):
            started = time.perf_counter()
            command = [sys.executable, os.path.join(ROOT, "train.py"), "--config", CONFIG, "--model-dir", run_dir,
                       "--set", f"data.root={data_root}"]
            for override in RECIPES[recipe]:
                command += ["--set", override]
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                       PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
            if out.returncode != 0:
                raise RuntimeError(f"quick-start training failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
            history = _read_history(os.path.join(run_dir, "history.csv"))
            result = {"run_dir": run_dir, "data_root": data_root, "epochs": len(history),
                      "val_miou": max(float(row["val_logits_miou"]) for row in history),
                      "last_val_miou": float(history[-1]["val_logits_miou"]),
                      "train_seconds": time.perf_counter() - started}
            with open(result_path, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
            print(f"\ntrained the quick-start fixture: {result}", file=sys.stderr)
    with open(result_path, encoding="utf-8") as f:
        return json.load(f)


def _read_history(path: str) -> list[dict]:
    import csv

    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))
