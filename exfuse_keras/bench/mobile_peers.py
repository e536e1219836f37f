"""ExFuse-MobileNetV3 (and its minimalistic variant) beside ExFuse-ResNet-101 and keras-hub's
SegFormer-B0, in one run: TFLite float32, int8 and int8_io latency (``bench.export_latency`` and
``peer_segformer.py latency``) and the training step (``bench.train_step`` and
``peer_segformer.py train``), 512², 2 threads, each measurement a TensorFlow job of its own, one
after another.

Usage::

    python -m exfuse_keras.bench.mobile_peers --output docs/results/zen3_benchmarks/mobile_peers \\
        [--size 512] [--repeats 10] [--peer-python .venv-peer/bin/python]

Writes each step's JSON under ``--output`` and ``mobile_peers.json`` (the table's rows and the
CPU), and prints one table: parameters, forward GFLOPs, TFLite float32, int8 and int8_io (int8
pixels in, int8 logits out; ours only: the peer's script converts with float ends) ms per image,
training images per second (batch 2, float32, no XLA). All models have random weights: latency
does not depend on them. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# export_latency's model name -> (train_step's name, the row's label); export_latency labels a
# model "<label> (random init)", so a row is matched on the label before " (".
EXFUSE = {"r101": ("exfuse", "ExFuse-ResNet-101"), "mobilenetv3": ("mobilenetv3", "ExFuse-MobileNetV3-Large"),
          "mobilenetv3_min": ("mobilenetv3_min", "ExFuse-MobileNetV3-Large-minimalistic")}
QUANTIZATIONS = ("float32", "int8", "int8_io")


def _run(command: list[str], log) -> str:
    log(" ".join(command))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", EXFUSE_ROOT=ROOT)
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{command[0]} ... failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def collect(export_rows: dict, train_rows: list, peer_latency: dict, peer_train: dict) -> list[dict]:
    """One row per model from the four measurements' JSON."""
    rows = []
    for train_name, label in EXFUSE.values():
        mine = [r for r in export_rows["rows"] if r["model"].split(" (")[0] == label]
        ms = {q: next((r["ms"] for r in mine if r["format"].startswith(f"TFLite {q} ")), None) for q in QUANTIZATIONS}
        step = next((r for r in train_rows if r["model"] == train_name and r["precision"] == "float32"), None)
        rows.append({"model": label, "params": step and step["params"], "forward_gflops": step and step["forward_gflops"],
                     "tflite_float32_ms": ms["float32"], "tflite_int8_ms": ms["int8"],
                     "tflite_int8_io_ms": ms["int8_io"], "train_img_per_s": step and step["img_per_s"]})
    rows.append({"model": "keras-hub SegFormer-B0", "params": peer_latency["params"],
                 "forward_gflops": peer_latency["forward_gflops"], "tflite_float32_ms": peer_latency["tflite_float32_ms"],
                 "tflite_int8_ms": peer_latency["tflite_int8_ms"], "tflite_int8_io_ms": None,
                 "train_img_per_s": peer_train["img_per_s"]})
    return rows


def format_table(rows: list[dict]) -> str:
    def number(value, spec):
        return "–" if value is None else format(value, spec)

    lines = ["| model | parameters | forward GFLOPs | TFLite float32 ms | TFLite int8 ms | TFLite int8_io ms "
             "| train img/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = "–" if r["params"] is None else f"{r['params'] / 1e6:.2f} M"
        lines.append(f"| {r['model']} | {params} | {number(r['forward_gflops'], '.2f')} | "
                     f"{number(r['tflite_float32_ms'], '.1f')} | {number(r['tflite_int8_ms'], '.1f')} | "
                     f"{number(r.get('tflite_int8_io_ms'), '.1f')} | {number(r['train_img_per_s'], '.3f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/mobile_peers")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--peer-python", default=os.path.join(ROOT, ".venv-peer", "bin", "python"))
    args = parser.parse_args(argv)
    if not os.path.isfile(args.peer_python):
        print(f"error: --peer-python {args.peer_python}: no such Python (make bench-env installs keras-hub there)",
              file=sys.stderr)
        return 2
    from exfuse_keras.machine import cpu_record

    os.makedirs(args.output, exist_ok=True)
    path = {name: os.path.join(args.output, f"{name}.json")
            for name in ("export_latency", "train_step", "peer_latency", "peer_train")}
    me, peer = [sys.executable, "-m"], [args.peer_python, os.path.join(ROOT, "exfuse_keras", "bench", "peer_segformer.py")]
    size = str(args.size)
    log = lambda line: print(f"$ {line}", flush=True)  # noqa: E731
    _run([*me, "exfuse_keras.bench.export_latency", "--models", ",".join(EXFUSE), "--no-onnx", "--size", size,
          "--repeats", str(args.repeats), "--threads", "2", "--json", path["export_latency"]], log)
    with open(path["peer_latency"], "w", encoding="utf-8") as f:
        f.write(_run([*peer, "latency", "--size", size, "--threads", "2", "--repeats", str(args.repeats)],
                     log).strip().splitlines()[-1])
    _run([*me, "exfuse_keras.bench.train_step", "--models", ",".join(t for t, _ in EXFUSE.values()), "--size", size,
          "--batch", "2", "--warmup", "2", "--steps", "4", "--json", path["train_step"]], log)
    with open(path["peer_train"], "w", encoding="utf-8") as f:
        f.write(_run([*peer, "train", "--size", size, "--batch", "2", "--warmup", "2", "--steps", "4"],
                     log).strip().splitlines()[-1])
    loaded = {name: json.load(open(p, encoding="utf-8")) for name, p in path.items()}
    rows = collect(loaded["export_latency"], loaded["train_step"], loaded["peer_latency"], loaded["peer_train"])
    with open(os.path.join(args.output, "mobile_peers.json"), "w", encoding="utf-8") as f:
        json.dump({"cpu": cpu_record(), "size": args.size, "threads": 2, "train_batch": 2, "rows": rows}, f, indent=2)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
