"""Parameters and FLOPs per part of the model (backbone, each ExFuse module, decoder).

FLOPs are 2 x multiply-accumulates of the convolutions, transposed convolutions and dense
layers, read from the traced TensorFlow graph at a fixed input size (grouped convolutions
included, which Keras runs as nested XLA functions on CPU). Element-wise ops, BatchNorm and
resizing are left out, as in the usual ResNet counts (ResNet-101: 15.6 GFLOPs at 224x224).

Usage::

    python -m exfuse_keras.summary --config configs/exfuse_resnet101.yaml --size 512
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict

import numpy as np

PART_ORDER = ("input", "backbone", "SEB", "GCN", "ECRE", "decoder", "final stage", "SS heads", "other")


def part_of(layer_name: str) -> str:
    """The part of the architecture a top-level layer of ``build_model``'s model belongs to."""
    if layer_name == "normalization":
        return "input"
    if layer_name == "backbone":
        return "backbone"
    if layer_name.startswith(("seb_", "recurrent_seb")):
        return "SEB"
    if layer_name.startswith("gcn_"):
        return "GCN"
    if layer_name.startswith("ecre"):
        return "ECRE"
    if layer_name.startswith(("up_stride1", "br_stride1", "dap")):
        return "final stage"
    if layer_name.startswith(("br_", "up_", "fuse_")):
        return "decoder"
    if layer_name.startswith("ss_"):
        return "SS heads"
    return "other"


def _op_flops(op) -> int:
    """2 x MACs of one graph op, 0 for ops that are not convolutions or matrix products."""
    def shape(t):
        dims = t.shape.as_list()
        if any(d is None for d in dims):
            raise ValueError(f"unknown shape {dims} in {op.name}: trace at a fixed input size")
        return dims

    if op.type == "Conv2D":
        kh, kw, cin_per_group, _ = shape(op.inputs[1])
        return 2 * int(np.prod(shape(op.outputs[0]))) * kh * kw * cin_per_group
    if op.type == "DepthwiseConv2dNative":
        kh, kw, _, _ = shape(op.inputs[1])
        return 2 * int(np.prod(shape(op.outputs[0]))) * kh * kw
    if op.type == "Conv2DBackpropInput":
        kh, kw, cout, _ = shape(op.inputs[1])
        return 2 * int(np.prod(shape(op.inputs[2]))) * kh * kw * cout
    if op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a, b = shape(op.inputs[0]), shape(op.inputs[1])
        transpose_a = op.get_attr("transpose_a") if op.type == "MatMul" else op.get_attr("adj_x")
        k = a[-2] if transpose_a else a[-1]
        return 2 * int(np.prod(shape(op.outputs[0]))) * k
    return 0


def _graph_flops(graph, owner: str, totals: dict, layer_names: list, depth: int = 0) -> None:
    for op in graph.get_operations():
        part_owner = owner
        if depth == 0:
            parts = op.name.split("/")
            if len(parts) > 2:
                scope = parts[1]
                matches = [n for n in layer_names if scope == n or re.fullmatch(re.escape(n) + r"_\d+", scope)]
                part_owner = max(matches, key=len) if matches else "other"
        if op.type in ("StatefulPartitionedCall", "PartitionedCall"):
            nested = graph._get_function(op.get_attr("f").name)  # grouped convs run as XLA functions
            if nested is not None:
                _graph_flops(nested.graph, part_owner, totals, layer_names, depth + 1)
            continue
        flops = _op_flops(op)
        if flops:
            totals[part_owner] = totals.get(part_owner, 0) + flops


def count_flops(model, height: int, width: int) -> dict:
    """FLOPs of one ``[1, height, width, C]`` forward pass, per top-level layer name."""
    import tensorflow as tf

    spec = tf.TensorSpec([1, height, width, model.input.shape[-1]], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    totals: dict = {}
    _graph_flops(concrete.graph, "other", totals, [layer.name for layer in model.layers])
    return totals


def summarize(model, height: int, width: int) -> "OrderedDict[str, dict]":
    """Parameters (trainable + not) and GFLOPs per architectural part, with a total row."""
    rows = OrderedDict((part, {"params": 0, "gflops": 0.0}) for part in PART_ORDER)
    for layer in model.layers:
        rows[part_of(layer.name)]["params"] += layer.count_params()
    for name, flops in count_flops(model, height, width).items():
        rows[part_of(name)]["gflops"] += flops / 1e9
    rows = OrderedDict((k, v) for k, v in rows.items() if v["params"] or v["gflops"])
    rows["total"] = {"params": sum(v["params"] for v in rows.values()),
                     "gflops": sum(v["gflops"] for v in rows.values())}
    return rows


def format_summary(rows, height: int, width: int) -> str:
    lines = [f"{'part':<14}{'parameters':>14}{'GFLOPs @ ' + f'{height}x{width}':>20}"]
    for part, row in rows.items():
        if part == "total":
            lines.append("-" * 48)
        lines.append(f"{part:<14}{row['params']:>14,}{row['gflops']:>20.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--size", type=int, nargs="+", default=[512],
                        help="input size: one value (square) or height width")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--layers", action="store_true", help="also print Keras' layer-by-layer summary")
    args = parser.parse_args(argv)

    from exfuse_keras.config import OUTPUT_STRIDE, ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    height, width = (args.size * 2)[:2] if len(args.size) == 1 else args.size[:2]
    if height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
        print(f"error: --size {height} {width}: height and width must be multiples of {OUTPUT_STRIDE}",
              file=sys.stderr)
        return 2
    from exfuse_keras.model import build_model

    cfg.model.backbone.weights = None  # counting needs no pretrained weights (and no download)
    model = build_model(cfg)
    if args.layers:
        model.summary(line_length=110)
    print(f"{args.config}: outputs {list(model.output.keys())}")
    print(format_summary(summarize(model, height, width), height, width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
