"""Per-op time of a TFLite file: which ops run int8 or float, in XNNPACK or in TFLite's own kernels.

Usage::

    python -m exfuse_keras.bench.tflite_ops FILE.tflite [--threads 2] [--top 15] [--json PATH]
    python -m exfuse_keras.bench.tflite_ops --model r101 --size 512 --quantization int8 [--save FILE]

The second form converts ExFuse-ResNet-101 (random initialisation, ``configs/exfuse_resnet101.yaml``)
or the quick start (``--model quickstart``, the trained ``--run`` if it exists) with
``exfuse_keras.export.tflite.convert``, int8 calibrated on ``--calibration-images`` smooth random
images as ``bench.export_latency`` does.

The ai_edge_litert Interpreter has no op profiler in Python, so each operator of the main subgraph is
cut out as a one-op model (its constant inputs kept, its other inputs random values of their type)
and timed alone, median of ``--repeats`` calls after one, in the Interpreter with ``--threads``
threads and XNNPACK applied as the Interpreter does by default. ``kernel`` says who ran it:
``XNNPACK`` when the delegate took the op, ``builtin`` when TFLite's own kernel did (an op XNNPACK
does not support, or one with a non-constant weight). On ExFuse-ResNet-101 at 512x512 the per-op
sum came within 2% of the whole file's time (229.5 against 226.5 ms, int8). Prints the time per
(op, kernel, types) and the slowest ops as Markdown tables.
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import time

import numpy as np

from exfuse_keras.bench.models import MODELS


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _names(enum) -> dict:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


def _is_constant(model, tensor) -> bool:
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def one_op_model(model, index: int) -> bytes:
    """The flatbuffer of operator ``index`` of ``model``'s (a ``ModelT``) main subgraph alone: its
    constant inputs kept with their buffers, its other inputs the new model's inputs."""
    schema = _schema()
    from ai_edge_litert.tools import flatbuffer_utils

    graph = model.subgraphs[0]
    op = graph.operators[index]
    single = schema.ModelT()
    single.version, single.operatorCodes, single.description = model.version, model.operatorCodes, b"one op"
    single.buffers = [schema.BufferT()]
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.inputs = [], []
    renumbered = {}

    def add(tensor_index, is_input):
        if tensor_index < 0:
            return tensor_index  # an optional input left out
        if tensor_index not in renumbered:
            tensor = copy.copy(graph.tensors[tensor_index])
            constant = _is_constant(model, tensor)
            single.buffers.append(model.buffers[tensor.buffer] if constant else schema.BufferT())
            tensor.buffer = len(single.buffers) - 1
            renumbered[tensor_index] = len(subgraph.tensors)
            subgraph.tensors.append(tensor)
            if is_input and not constant:
                subgraph.inputs.append(renumbered[tensor_index])
        return renumbered[tensor_index]

    new_op = copy.copy(op)
    new_op.inputs = [add(t, True) for t in op.inputs]
    new_op.outputs = [add(t, False) for t in op.outputs]
    subgraph.operators, subgraph.outputs = [new_op], list(new_op.outputs)
    single.subgraphs = [subgraph]
    single.signatureDefs = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(single))


def _random_inputs(runner, rng) -> None:
    for detail in runner.get_input_details():
        dtype, shape = detail["dtype"], detail["shape"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = rng.integers(max(info.min, -128), min(info.max, 127), shape, endpoint=True).astype(dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        runner.set_tensor(detail["index"], value)


def profile(flatbuffer: bytes, threads: int = 2, repeats: int = 5) -> list[dict]:
    """One row per operator of the file's main subgraph, in execution order: ``index``, ``op``,
    ``kernel`` (``XNNPACK`` or ``builtin``), ``inputs`` (dtypes of the non-constant inputs),
    ``weights`` (of the constant ones), ``output`` (dtype), ``input_shape``, ``output_shape``,
    ``weight_shape`` (the first constant input of rank >= 2, or None), ``name`` (the output
    tensor's) and ``ms``."""
    schema = _schema()
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    types, operators = _names(schema.TensorType), _names(schema.BuiltinOperator)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    rng = np.random.default_rng(0)
    rows = []
    for index, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        runner = Interpreter(model_content=one_op_model(model, index), num_threads=threads)
        runner.allocate_tensors()
        delegated = any(d["op_name"] == "DELEGATE" for d in runner._get_ops_details())
        _random_inputs(runner, rng)
        runner.invoke()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            runner.invoke()
            times.append(time.perf_counter() - started)
        inputs = [graph.tensors[t] for t in op.inputs if t >= 0]
        activations = [t for t in inputs if not _is_constant(model, t)]
        weights = [t for t in inputs if _is_constant(model, t) and len(t.shape) >= 2]
        output = graph.tensors[op.outputs[0]]
        rows.append({
            "index": index, "op": operators.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM"),
            "kernel": "XNNPACK" if delegated else "builtin",
            "inputs": "/".join(types[t.type] for t in inputs if not _is_constant(model, t)),
            "weights": "/".join(types[t.type] for t in inputs if _is_constant(model, t)),
            "output": types[output.type],
            "input_shape": [int(d) for d in activations[0].shape] if activations else [],
            "output_shape": [int(d) for d in output.shape],
            "weight_shape": [int(d) for d in weights[0].shape] if weights else None,
            "name": (output.name or b"").decode(errors="replace"),
            "ms": 1000 * statistics.median(times)})
    return rows


def by_kind(rows: list[dict]) -> str:
    """Markdown: total ms and share per (op, kernel, input types -> output type), slowest first."""
    total = sum(row["ms"] for row in rows)
    groups = collections.defaultdict(lambda: [0, 0.0])
    for row in rows:
        group = groups[(row["op"], row["kernel"], row["inputs"] or "(constant)", row["output"])]
        group[0] += 1
        group[1] += row["ms"]
    lines = ["| op | kernel | types | count | ms | share |", "|---|---|---|---|---|---|"]
    for (op, kernel, inputs, output), (count, ms) in sorted(groups.items(), key=lambda item: -item[1][1]):
        lines.append(f"| {op} | {kernel} | {inputs} → {output} | {count} | {ms:.1f} | {100 * ms / total:.1f}% |")
    lines.append(f"| all | | | {len(rows)} | {total:.1f} | 100% |")
    return "\n".join(lines)


def _layer(name: str) -> str:
    """The Keras layer an op came from, read from its tensor name (``model/layer/...``)."""
    parts = name.split(";")[0].split("/")
    return "/".join(p.removesuffix("_1") for p in parts[1:3]) if len(parts) > 2 else name[:40]


def slowest(rows: list[dict], top: int = 15) -> str:
    """Markdown: the ``top`` slowest ops with kernel, types, shapes and the layer they belong to."""
    lines = ["| ms | op | kernel | types | input → output | weight | layer |", "|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: -r["ms"])[:top]:
        shape = lambda s: "×".join(map(str, s[1:] if len(s) == 4 else s))  # noqa: E731
        weight = "×".join(map(str, row["weight_shape"])) if row["weight_shape"] else ""
        lines.append(f"| {row['ms']:.1f} | {row['op']} | {row['kernel']} | {row['inputs'] or '(constant)'} → "
                     f"{row['output']} | {shape(row['input_shape'])} → {shape(row['output_shape'])} | {weight} | "
                     f"{_layer(row['name'])} |")
    return "\n".join(lines)


def _convert(args) -> bytes:
    from exfuse_keras.bench.export_latency import smooth_image
    from exfuse_keras.bench.models import benchmark_models
    from exfuse_keras.export import tflite

    calibration = [smooth_image(args.size, seed)[None].astype(np.float32)
                   for seed in range(1, args.calibration_images + 1)]
    for _, _, model in benchmark_models(args.run, [args.model]):
        return tflite.convert(model, (args.size, args.size), args.quantization,
                              representative=lambda: iter(calibration))
    raise ValueError(f"--model {args.model!r}: expected one of {', '.join(MODELS)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="a .tflite file (or convert one with --model)")
    parser.add_argument("--model", choices=MODELS,
                        help="convert this benchmark model instead")
    parser.add_argument("--run", default="runs/quickstart", help="the quick-start run folder (--model quickstart)")
    parser.add_argument("--size", type=int, default=512, help="--model: image side (a multiple of 32)")
    parser.add_argument("--quantization", default="int8", help="--model: float32, float16, dynamic, int8 or int8_io")
    parser.add_argument("--calibration-images", type=int, default=8, help="--model: int8 calibration images")
    parser.add_argument("--save", metavar="FILE", help="--model: also write the converted file")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per op (median reported)")
    parser.add_argument("--top", type=int, default=15, help="rows of the slowest-ops table")
    parser.add_argument("--json", metavar="PATH", help="also write every op's row as JSON")
    args = parser.parse_args(argv)
    if (args.file is None) == (args.model is None):
        parser.error("give a .tflite FILE or --model, not both")
    if args.model:
        flatbuffer = _convert(args)
        if args.save:
            from exfuse_keras.atomic import atomic_write

            atomic_write(args.save, flatbuffer)
    else:
        with open(args.file, "rb") as f:
            flatbuffer = f.read()
    rows = profile(flatbuffer, args.threads, args.repeats)
    source = args.file or f"{args.model} {args.quantization} {args.size}x{args.size}"
    print(f"{source}: {len(rows)} ops, {args.threads} threads, each op alone (median of {args.repeats})\n")
    print(by_kind(rows) + "\n")
    print(slowest(rows, args.top))
    if args.json:
        from exfuse_keras.export.common import write_json

        write_json(args.json, {"source": source, "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
