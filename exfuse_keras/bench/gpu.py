"""A ready GPU check: one command that shows, on one GPU in under 8 minutes, how ExFuse trains there.

Usage::

    python -m exfuse_keras.bench.gpu [--output DIR] [--time-limit 480]
    python -m exfuse_keras.bench.gpu --dry-run --output DIR     # on CPU: tiny sizes, 1-2 minutes
    make bench-gpu

It prints one report (and writes it as ``gpu_check.json`` and ``gpu_check.md`` under ``--output``):

- **system**: device name and compute capability, driver (``nvidia-smi``), TensorFlow, Keras, CUDA
  and cuDNN versions (``tf.sysconfig.get_build_info()``), whether TF32 is on.
- **resize gradient under XLA**: the gradient of ``tf.image.resize`` bilinear (half-pixel
  centres, up- and downsampling) computed with ``jit_compile=True`` against the one without
  (tensorflow issue 57575: XLA had no ``ResizeBilinearGrad`` with half-pixel centres). ExFuse
  trains through such resizes (SEB, ``ResizeToMatch``), so a mismatch or error here explains a
  wrong or failing XLA row below.
- **training step**: ExFuse-ResNet-101 (configs/exfuse_resnet101.yaml, random init) at 512x512,
  the training job's own compiled model (``training.run.build_training_model``: losses, optimiser,
  mIoU metric) on random images and masks, batch 8 and 16, float32, mixed_float16 and
  mixed_bfloat16, each with and without XLA. Per row: img/s after warm-up
  (``bench.train_step.time_steps``), achieved TFLOP/s (3 x forward FLOPs of
  ``exfuse_keras.summary.count_flops`` x img/s), MFU (achieved / the device's dense peak for that
  precision, from ``PEAKS``; blank for an unknown device; float32 is taken against the TF32 peak
  when TensorFlow runs it on TF32 tensor cores), the allocator's peak GPU memory
  (``get_memory_info``, reset before each row) and whether the loss of a step after the timed
  ones is finite. An out-of-memory or XLA error fills its row instead of stopping the check.
- **quick start**: ``training.run.train`` on configs/quickstart.yaml (the device's defaults:
  mixed_bfloat16 and XLA on a GPU), its run directory under ``--output``, with its time budget
  cut to this part's; passes at best val mIoU >= 0.7.
- **export**: the SavedModel of the trained quick start and of ExFuse-ResNet-101, exported
  (``export.saved_model.export_saved_model``) and timed on one image
  (``bench.export_latency`` helpers): ``serving_default`` (JPEG in, mask out) and
  ``network_logits``, median ms.

Time guard: each part has a share of ``--time-limit`` (``BUDGETS``); a part skips what would not
fit in what is left of its share (a training-step row is estimated from the slowest row so far
with the same XLA setting, else the slowest row), and a watchdog writes the report so far and
exits with status 3 when the whole limit is reached. Progress lines go to stdout as it runs.
The dry run has no time limit unless ``--time-limit`` is given: it is there to prove that every row
compiles and trains, so a slow or busy CPU must not turn a row into "skipped".

``--dry-run`` runs the same code on CPU at tiny sizes: the quick-start model at 64x64, batch 2,
1 + 2 steps, float32 and mixed_bfloat16, each with and without XLA (every row of the full check's
table, bf16 + XLA included: its gradients compile since the bilinear resizes compute in float32,
exfuse_keras/layers/resize.py); the quick start for a few steps on a small generated dataset (no
0.7 target); the export at 64x64.
``--precisions`` runs only some of the training step's precisions. ``--device-name`` looks MFU
peaks up for another device name, ``--peak-tflops`` sets one peak for every precision (both to
check the MFU column without that GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PRECISIONS = ("mixed_bfloat16", "mixed_float16", "float32")
TIME_LIMIT = 480.0
# Shares of --time-limit per part (seconds at the default limit); startup and the report use the rest.
BUDGETS = {"system": 10, "resize check": 10, "train step": 220, "quick start": 130, "export": 80}
# Dense (no sparsity) peak TFLOP/s per precision, from the vendors' data sheets; the first entry
# whose key is in the device name wins (so "A100" before "A10", "H100 PCIe" before "H100").
PEAKS = (
    ("H200", {"bf16": 989, "fp16": 989, "tf32": 494.7, "fp32": 67}),
    ("H100 PCIe", {"bf16": 756, "fp16": 756, "tf32": 378, "fp32": 51}),
    ("H100", {"bf16": 989, "fp16": 989, "tf32": 494.7, "fp32": 67}),
    ("A100", {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}),
    ("A10G", None),
    ("L40S", {"bf16": 362, "fp16": 362, "tf32": 183, "fp32": 91.6}),
    ("L4", {"bf16": 121, "fp16": 121, "tf32": 60, "fp32": 30.3}),
    ("A10", {"bf16": 125, "fp16": 125, "tf32": 62.5, "fp32": 31.2}),
    ("V100", {"fp16": 125, "fp32": 15.7}),
    ("T4", {"fp16": 65, "fp32": 8.1}),
)
PEAK_KEY = {"mixed_bfloat16": "bf16", "mixed_float16": "fp16", "float32": "fp32"}


@dataclasses.dataclass
class Sizes:
    """What the training-step and export parts run: the full check or the CPU dry run."""

    config: str
    overrides: tuple
    size: int
    batches: tuple
    precisions: tuple
    xla: tuple
    warmup: int
    steps: int
    export_models: tuple


FULL = Sizes("exfuse_resnet101.yaml", ("model.backbone.weights=null",), 512, (8, 16), PRECISIONS, (True, False),
             3, 10, ("quickstart", "r101"))
DRY = Sizes("quickstart.yaml", (), 64, (2,), ("float32", "mixed_bfloat16"), (True, False), 1, 2, ("quickstart",))


class Clock:
    """Seconds since the start, the part running now, and each part's deadline."""

    def __init__(self, time_limit: float):
        self.start = time.perf_counter()
        self.scale = time_limit / TIME_LIMIT  # inf: no limit
        self.part = "startup"
        self.part_end = math.inf

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def begin(self, part: str) -> None:
        self.part = part
        self.part_end = time.perf_counter() + BUDGETS[part] * self.scale
        self.log(f"{part}: " + (f"budget {BUDGETS[part] * self.scale:.0f} s" if math.isfinite(self.scale)
                                else "no time limit"))

    def left(self) -> float:
        return self.part_end - time.perf_counter()

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)


def peaks_for(device_name: str):
    """The ``PEAKS`` entry whose key is in ``device_name`` (None: unknown device)."""
    for key, peaks in PEAKS:
        if key.lower() in device_name.lower():
            return peaks
    return None


def peak_tflops(precision: str, device_name: str, tf32: bool, override=None):
    """The dense peak TFLOP/s a row's MFU is taken against (None: not known)."""
    if override:
        return override
    peaks = peaks_for(device_name) or {}
    key = PEAK_KEY[precision]
    if key == "fp32" and tf32:
        key = "tf32"
    return peaks.get(key)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160] if text else ''}"


def system_info(device_override=None) -> dict:
    """Device, driver and library versions; ``tf32``: float32 matmuls and convolutions run as TF32."""
    import keras
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    info = {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version(),
            "cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"), "gpus": len(gpus),
            "cpus": os.cpu_count()}
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = details.get("compute_capability") or (0, 0)
        info.update(device=details.get("device_name", "GPU"), compute_capability=".".join(map(str, capability)),
                    tf32=bool(tf.config.experimental.tensor_float_32_execution_enabled() and capability >= (8, 0)))
    else:
        info.update(device=f"CPU ({platform.processor() or platform.machine()})", tf32=False)
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        if query.returncode == 0 and query.stdout.strip():
            name, driver, memory = (field.strip() for field in query.stdout.splitlines()[0].split(","))
            info.update(nvidia_smi_name=name, driver=driver, memory_total=memory)
    info["peaks_for"] = device_override or info["device"]
    return info


def resize_gradient_check() -> dict:
    """The gradient of bilinear ``tf.image.resize`` (half-pixel centres) with and without XLA,
    upsampling 7x9 -> 32x40 and downsampling 32x40 -> 7x9: max |difference| / max |gradient|."""
    import tensorflow as tf

    result = {}
    for name, (source, target) in {"up": ((7, 9), (32, 40)), "down": ((32, 40), (7, 9))}.items():
        x = tf.random.stateless_normal([2, *source, 3], seed=[1, 2])
        weights = tf.random.stateless_normal([2, *target, 3], seed=[3, 4])

        def gradient(x, target=target, weights=weights):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.image.resize(x, target, method="bilinear") * weights)
            return tape.gradient(loss, x)

        try:
            reference = tf.function(gradient)(x)
            compiled = tf.function(gradient, jit_compile=True)(x)
            difference = float(tf.reduce_max(tf.abs(compiled - reference)) / tf.reduce_max(tf.abs(reference)))
            result[name] = {"relative_difference": difference, "ok": difference < 1e-4}
        except Exception as err:  # noqa: BLE001 - an XLA failure is the finding, reported in the row
            result[name] = {"error": _first_line(err), "ok": False}
    return result


def _memory_device() -> str | None:
    import tensorflow as tf

    return "GPU:0" if tf.config.list_physical_devices("GPU") else None


def train_step_rows(sizes: Sizes, info: dict, clock: Clock, result: dict, peak_override=None) -> None:
    """Fills ``result`` (``forward_gflops`` per image, ``rows``: one per precision x XLA x batch) as
    rows finish, so a stopped check still reports them; see the module docstring."""
    import keras
    import tensorflow as tf

    from exfuse_keras.bench.train_step import forward_gflops, random_batch, time_steps
    from exfuse_keras.config import load_config
    from exfuse_keras.training.run import build_training_model

    cfg = load_config(str(ROOT / "configs" / sizes.config), list(sizes.overrides))
    memory_device = _memory_device()
    rows, slowest = result["rows"], {}
    for precision in sizes.precisions:
        keras.backend.clear_session()
        gc.collect()
        keras.mixed_precision.set_global_policy(precision)
        model = None
        for jit in sizes.xla:
            for batch in sizes.batches:
                row = {"precision": precision, "xla": jit, "batch": batch, "img_per_s": None, "tflops": None,
                       "mfu": None, "peak_memory_gib": None, "loss": None, "loss_finite": None,
                       "error": "not finished"}
                rows.append(row)
                label = f"train step {precision}, XLA {'on' if jit else 'off'}, batch {batch}"
                if clock.left() < slowest.get(jit, max(slowest.values(), default=0)):
                    row["error"] = f"skipped: {clock.left():.0f} s left of the part's budget"
                    clock.log(f"{label}: {row['error']}")
                    continue
                started = time.perf_counter()
                try:
                    if model is None:
                        model = build_training_model(cfg, jit_compile=jit)
                        if result["forward_gflops"] is None:
                            result["forward_gflops"] = forward_gflops(model, sizes.size)
                    if model.jit_compile != jit:
                        model.jit_compile = jit
                        model.make_train_function(force=True)
                    if memory_device:
                        tf.config.experimental.reset_memory_stats(memory_device)
                    img_s = time_steps(model, sizes.size, batch, sizes.warmup, sizes.steps)
                    images, targets = random_batch(model, sizes.size, batch, cfg.data.num_classes)
                    loss = float(model.train_on_batch(images, targets, return_dict=True)["loss"])
                    tflops = 3 * result["forward_gflops"] * img_s / 1000
                    peak = peak_tflops(precision, info["peaks_for"], info["tf32"], peak_override)
                    row.update(img_per_s=img_s, tflops=tflops, mfu=tflops / peak if peak else None, loss=loss,
                               loss_finite=math.isfinite(loss), xla=bool(model.jit_compile), error=None)
                    if memory_device:
                        row["peak_memory_gib"] = tf.config.experimental.get_memory_info(memory_device)["peak"] / 2**30
                except Exception as err:  # noqa: BLE001 - OOM / XLA errors fill the row, the check goes on
                    row["error"] = _first_line(err)
                seconds = time.perf_counter() - started
                slowest[jit] = max(slowest.get(jit, 0), seconds)
                outcome = row["error"] or (f"{row['img_per_s']:.2f} img/s, {row['tflops']:.3g} TFLOP/s, "
                                           f"loss {row['loss']:.3f}")
                clock.log(f"{label}: {outcome} ({seconds:.0f} s)")
        del model
    keras.mixed_precision.set_global_policy("float32")


def quick_start(output: Path, dry_run: bool, clock: Clock) -> dict:
    """Trains configs/quickstart.yaml into ``output/quickstart`` within this part's budget."""
    from exfuse_keras.config import load_config
    from exfuse_keras.data.shapes import generate_shapes_dataset
    from exfuse_keras.training.run import train

    overrides = []
    if dry_run:
        overrides = [f"data.root={output / 'shapes_tiny'}", "train.epochs=1", "train.steps_per_epoch=4",
                     "train.batch_size=2", "train.val_batch_size=8", "train.warmup_steps=0"]
    cfg = load_config(str(ROOT / "configs" / "quickstart.yaml"), overrides)
    generate_shapes_dataset(cfg.data.root, **({"num_train": 16, "num_val": 8} if dry_run else {}), verbose=False)
    # Model building, compilation and saving happen outside train.max_train_seconds.
    budget = clock.left() - 30
    if budget <= 0:
        return {"error": f"skipped: {clock.left():.0f} s left of the part's budget"}
    if cfg.train.max_train_seconds is None or budget < cfg.train.max_train_seconds:
        cfg = load_config(str(ROOT / "configs" / "quickstart.yaml"),
                          overrides + [f"train.max_train_seconds={budget:.0f}"])
    model_dir = output / "quickstart"
    if model_dir.exists():
        clock.log(f"quick start: removing the previous run in {model_dir}")
        shutil.rmtree(model_dir)
    result = train(cfg, str(model_dir), verbose=2)
    return {"model_dir": str(model_dir), "train_seconds": result["train_seconds"], "steps": result["steps_run"],
            "img_per_s": result["steps_run"] * cfg.train.batch_size / result["train_seconds"],
            "val_miou": result["val_miou"], "best_val_miou": result["best_val_miou"],
            "max_train_seconds": cfg.train.max_train_seconds,
            "stopped_by_time_budget": result["stopped_by_time_budget"],
            "target": None if dry_run else 0.7,
            "passed": None if dry_run else result["best_val_miou"] >= 0.7}


def export_rows(run_dir: str, sizes: Sizes, clock: Clock, repeats: int, rows: list) -> None:
    """Appends to ``rows`` the SavedModel export time, size and serving latency (median ms, batch 1)
    of each model."""
    import keras
    import tensorflow as tf
    from PIL import Image

    from exfuse_keras.bench.export_latency import _median_ms, _megabytes, smooth_image
    from exfuse_keras.bench.models import benchmark_models
    from exfuse_keras.export.saved_model import export_saved_model

    keras.mixed_precision.set_global_policy("float32")
    image = smooth_image(sizes.size, 0)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    encoded, batch = tf.constant([buffer.getvalue()]), tf.constant(image[None].astype(np.float32))
    with tempfile.TemporaryDirectory(prefix="bench_gpu_export_") as folder:
        for name, cfg, model in benchmark_models(run_dir, sizes.export_models):
            row = {"model": name, "export_seconds": None, "mb": None, "serving_default_ms": None,
                   "network_logits_ms": None, "error": "not finished"}
            rows.append(row)
            if clock.left() <= 0:
                row["error"] = "skipped: the part's budget is spent"
                clock.log(f"export {name}: {row['error']}")
                continue
            try:
                started = time.perf_counter()
                path = export_saved_model(cfg, model, os.path.join(folder, f"saved_model_{len(rows)}"))
                loaded = tf.saved_model.load(path)
                row.update(export_seconds=time.perf_counter() - started, mb=_megabytes(path))
                serving, network = loaded.signatures["serving_default"], loaded.signatures["network_logits"]
                row["serving_default_ms"] = _median_ms(lambda: serving(image_bytes=encoded)["mask"].numpy(),
                                                       2, repeats)
                row["network_logits_ms"] = _median_ms(lambda: network(images=batch)["logits"].numpy(), 2, repeats)
                row["error"] = None
            except Exception as err:  # noqa: BLE001 - reported in the row
                row["error"] = _first_line(err)
            clock.log(f"export {name}: " + (row["error"] or f"{row['export_seconds']:.0f} s to export, "
                                            f"serving_default {row['serving_default_ms']:.1f} ms, "
                                            f"network_logits {row['network_logits_ms']:.1f} ms"))


def _fmt(value, spec: str, missing: str = "") -> str:
    return missing if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """The Markdown report: system lines, the training-step table, resize check, quick start, export."""
    info = report.get("system", {})
    lines = [f"# GPU check{' (dry run, CPU sizes)' if report['dry_run'] else ''}", "",
             f"- device: {info.get('device')}" + (f" (compute capability {info['compute_capability']})"
                                                   if info.get("compute_capability") else ""),
             f"- driver: {info.get('driver', 'no nvidia-smi')}; TensorFlow {info.get('tensorflow')}, "
             f"Keras {info.get('keras')}, CUDA {info.get('cuda')}, cuDNN {info.get('cudnn')}; "
             f"TF32 {'on' if info.get('tf32') else 'off'}; MFU peaks for: {info.get('peaks_for')}"]
    resize = report.get("resize_check")
    if resize:
        lines.append("- XLA gradient of bilinear resize (tensorflow#57575): " + ", ".join(
            f"{name} " + (f"rel. diff {r['relative_difference']:.1e} {'ok' if r['ok'] else 'MISMATCH'}"
                          if "error" not in r else r["error"]) for name, r in resize.items()))
    step = report.get("train_step")
    if step:
        lines += ["", f"Training step, {step['model']} at {step['size']}x{step['size']}, "
                  f"{_fmt(step['forward_gflops'], '.4g', '?')} forward GFLOPs/image, "
                  f"{step['warmup']} warm-up + {step['steps']} timed steps:", "",
                  "| precision | XLA | batch | img/s | TFLOP/s | MFU | peak mem (GiB) | loss | error |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in step["rows"]:
            loss = "" if row["loss"] is None else f"{row['loss']:.3f}" + ("" if row["loss_finite"] else " NOT FINITE")
            mfu = "" if row["mfu"] is None else f"{100 * row['mfu']:.3g}%"
            lines.append(f"| {row['precision']} | {'on' if row['xla'] else 'off'} | {row['batch']} | "
                         f"{_fmt(row['img_per_s'], '.2f')} | {_fmt(row['tflops'], '.3g')} | "
                         f"{mfu} | {_fmt(row['peak_memory_gib'], '.2f')} | {loss} | "
                         f"{row['error'] or ''} |")
    quick = report.get("quick_start")
    if quick:
        lines.append("")
        if quick.get("error"):
            lines.append(f"Quick start: {quick['error']}")
        else:
            verdict = "" if quick["target"] is None else (" (target >= 0.7: " +
                                                          ("passed)" if quick["passed"] else "NOT reached)"))
            lines.append(f"Quick start (configs/quickstart.yaml): {quick['steps']} steps in "
                         f"{quick['train_seconds']:.0f} s ({quick['img_per_s']:.1f} img/s), val mIoU "
                         f"{quick['val_miou']:.4f}, best {quick['best_val_miou']:.4f}{verdict}")
    export = report.get("export")
    if export:
        lines += ["", f"SavedModel on this device, one {export['size']}x{export['size']} image:", "",
                  "| model | export (s) | MB | serving_default ms (JPEG in, mask out) | network_logits ms | error |",
                  "|---|---|---|---|---|---|"]
        for row in export["rows"]:
            lines.append(f"| {row['model']} | {_fmt(row['export_seconds'], '.0f')} | {_fmt(row['mb'], '.1f')} | "
                         f"{_fmt(row['serving_default_ms'], '.1f')} | {_fmt(row['network_logits_ms'], '.1f')} | "
                         f"{row['error'] or ''} |")
        if export["error"]:
            lines.append(f"Export stopped: {export['error']}")
    lines += ["", "Seconds per part: " + ", ".join(f"{k} {v:.0f}" for k, v in report["seconds"].items())
              + f"; total {report.get('total_seconds', 0):.0f}" + (f"; STOPPED: {report['stopped']}"
                                                                      if report.get("stopped") else "")]
    return "\n".join(lines)


def write_report(report: dict, output) -> str:
    text = format_report(report)
    if output:
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "gpu_check.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(output, "gpu_check.md"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="write gpu_check.json, gpu_check.md and the quick start's run here")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: check that it runs")
    parser.add_argument("--time-limit", type=float, default=None,
                        help=f"seconds for the whole check (default {TIME_LIMIT:.0f}; none for --dry-run)")
    parser.add_argument("--device-name", help="look MFU peaks up for this device name instead of the one found")
    parser.add_argument("--peak-tflops", type=float, help="one peak TFLOP/s for every precision's MFU")
    parser.add_argument("--parts", default="system,resize check,train step,quick start,export",
                        help="comma-separated subset of: " + ", ".join(BUDGETS))
    parser.add_argument("--precisions", default=None,
                        help="comma-separated training-step precisions (default: all of the check's: "
                             + ", ".join(PRECISIONS) + "; the dry run's float32 and mixed_bfloat16)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",")]
    precisions = tuple(p.strip() for p in args.precisions.split(",")) if args.precisions else None
    if precisions and not set(precisions) <= set(PRECISIONS):
        parser.error(f"--precisions: unknown {sorted(set(precisions) - set(PRECISIONS))}; "
                     f"choose from {', '.join(PRECISIONS)}")
    unknown = [p for p in parts if p not in BUDGETS]
    if unknown or "system" not in parts:
        parser.error(f"--parts: unknown {unknown}" if unknown else "--parts: 'system' is needed for the MFU peaks")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.time_limit is not None and args.time_limit <= 0:
        parser.error(f"--time-limit must be positive, got {args.time_limit:g}")
    time_limit = args.time_limit or (math.inf if args.dry_run else TIME_LIMIT)
    clock = Clock(time_limit)

    import tensorflow as tf

    if not args.dry_run and not tf.config.list_physical_devices("GPU"):
        print("error: no GPU visible to TensorFlow (install requirements-gpu.txt; on CPU use --dry-run)",
              file=sys.stderr)
        return 2
    sizes = DRY if args.dry_run else FULL
    if precisions:
        sizes = dataclasses.replace(sizes, precisions=precisions)
    report = {"dry_run": args.dry_run, "time_limit": time_limit if math.isfinite(time_limit) else None,
              "seconds": {}}

    def stop():
        report["stopped"] = f"time limit of {time_limit:.0f} s reached during {clock.part}"
        report["total_seconds"] = clock.elapsed()
        print(write_report(report, args.output), flush=True)
        os._exit(3)

    watchdog = threading.Timer(time_limit - clock.elapsed(), stop) if math.isfinite(time_limit) else None
    if watchdog:
        watchdog.daemon = True
        watchdog.start()
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as scratch:
        output = Path(args.output or scratch).resolve()
        output.mkdir(parents=True, exist_ok=True)
        for part in parts:
            clock.begin(part)
            started = time.perf_counter()
            if part == "system":
                report["system"] = system_info(args.device_name)
                clock.log(f"device {report['system']['device']}, TensorFlow {report['system']['tensorflow']}")
            elif part == "resize check":
                report["resize_check"] = resize_gradient_check()
                clock.log(f"resize check: {json.dumps(report['resize_check'])}")
            elif part == "train step":
                if args.dry_run and "mixed_bfloat16" in sizes.precisions and not _cpu_runs_bfloat16():
                    sizes = dataclasses.replace(sizes, precisions=tuple(p for p in sizes.precisions
                                                                        if p != "mixed_bfloat16"))
                    clock.log("mixed_bfloat16 left out: this CPU does not run a bfloat16 convolution's gradient")
                report["train_step"] = {"model": Path(sizes.config).stem, "size": sizes.size,
                                        "forward_gflops": None, "warmup": sizes.warmup, "steps": sizes.steps,
                                        "rows": []}
                train_step_rows(sizes, report["system"], clock, report["train_step"], args.peak_tflops)
            elif part == "quick start":
                report["quick_start"] = {"error": "not finished"}
                try:
                    report["quick_start"] = quick_start(output, args.dry_run, clock)
                except Exception as err:  # noqa: BLE001 - e.g. an XLA error: reported, the export still runs
                    report["quick_start"] = {"error": _first_line(err)}
            else:
                report["export"] = {"size": sizes.size, "rows": [], "error": None}
                try:
                    export_rows(str(output / "quickstart"), sizes, clock, 3 if args.dry_run else 20,
                                report["export"]["rows"])
                except Exception as err:  # noqa: BLE001 - e.g. a quick-start run that cannot be loaded
                    report["export"]["error"] = _first_line(err)
            report["seconds"][part] = time.perf_counter() - started
    if watchdog:
        watchdog.cancel()
    report["total_seconds"] = clock.elapsed()
    print(write_report(report, args.output), flush=True)
    return 0


def _cpu_runs_bfloat16() -> bool:
    """Whether this CPU computes a bfloat16 convolution and its gradient (dry run only)."""
    import tensorflow as tf

    try:
        x = tf.ones([1, 8, 8, 3], tf.bfloat16)
        kernel = tf.Variable(tf.ones([3, 3, 3, 4], tf.bfloat16))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.nn.conv2d(x, kernel, 1, "SAME"))
        tape.gradient(loss, kernel).numpy()
        return True
    except (tf.errors.OpError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
