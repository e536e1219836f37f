"""The export job behind export.py: a trained run -> SavedModel, TF Serving folder, TFLite or ONNX.

    python export.py --weights runs/quickstart --format saved_model --output export/quickstart
    python export.py --weights runs/quickstart --format tf_serving --output export/serving [--version 2]
    python export.py --weights runs/quickstart --format tflite --output export/tflite \\
        --tflite-quantization float32,int8 --tflite-size 128,128
    python export.py --weights runs/quickstart --format onnx --output export/onnx

``--weights`` is a training run's folder (config.yaml + best.keras) or a ``.keras`` file with
``--config``. Only the main output (logits) is exported. Outputs:

- ``saved_model``: ``--output`` is the SavedModel folder (signatures: exfuse_keras/export/saved_model.py).
- ``tf_serving``: ``<output>/<model-name>/<version>/`` and ``<output>/models.config``.
- ``tflite``: ``<output>/<model-name>_<quantization>.tflite`` per quantisation, and ``export.json``.
- ``onnx``: ``<output>/<model-name>.onnx`` and ``export.json``.

The SavedModel formats bake the test-time protocol into the graph: the config's ``eval`` section
unless ``--tta`` / ``--scales`` / ``--flip`` / ``--sliding-window`` say otherwise. TFLite and ONNX
hold the bare network (fixed size / multiples of 32 in, logits out).
"""

from __future__ import annotations

import argparse
import os
import sys

FORMATS = ("saved_model", "tf_serving", "tflite", "onnx")


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH (512,512), got {text!r}") from None
    return height, width


def _quantizations(text: str) -> list[str]:
    from exfuse_keras.export.tflite import QUANTIZATIONS

    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in QUANTIZATIONS for v in values):
        raise argparse.ArgumentTypeError(f"expected one or more of {','.join(QUANTIZATIONS)} separated by "
                                         f"commas, got {text!r}")
    return values


def parse_args(argv=None):
    from exfuse_keras.inference.arguments import add_model_arguments, add_protocol_arguments

    parser = argparse.ArgumentParser(description="Export a trained ExFuse model for deployment.")
    add_model_arguments(parser)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="output folder (see the module doc per format)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output")
    group = parser.add_argument_group("SavedModel and TF Serving")
    add_protocol_arguments(group)
    group.add_argument("--with-probabilities", action="store_true",
                       help="also output the class probabilities [B, H, W, C] (large)")
    group.add_argument("--max-side", type=int, help="refuse images with a side above this (export.max_side, 2048)")
    group.add_argument("--model-name", default="exfuse", help="TF Serving model name (also the file stem of "
                                                              "tflite/onnx files)")
    group.add_argument("--version", type=int, help="TF Serving version (default: the next one)")
    group.add_argument("--serving-root", default="/models",
                       help="where --output is mounted in the TF Serving container (models.config base_path)")
    group = parser.add_argument_group("TFLite and ONNX")
    group.add_argument("--tflite-quantization", type=_quantizations, default=["float32"],
                       metavar="Q1,Q2", help="float32, float16, dynamic, int8, int8_io (int8 pixels less 128 in, int8 logits out); "
                            "comma-separated for several")
    group.add_argument("--tflite-size", type=_size, metavar="H,W", help="input size (export.tflite_size, 512,512)")
    group.add_argument("--calibration-batches", type=int, default=8,
                       help="int8, int8_io: training batches to calibrate activation ranges on")
    group.add_argument("--opset", type=int, default=17, help="ONNX opset")
    return parser.parse_args(argv)


def _check_protocol_arguments(args) -> None:
    graph_only = {"--tta": args.tta, "--scales": args.scales, "--flip": args.flip,
                  "--sliding-window": args.sliding_window, "--with-probabilities": args.with_probabilities,
                  "--max-side": args.max_side}
    given = [name for name, value in graph_only.items() if value not in (None, False)]
    if args.format in ("tflite", "onnx") and given:
        raise ValueError(f"{', '.join(given)}: only SavedModel exports run the protocol in the graph; "
                         f"--format {args.format} holds the bare network")


def _update_metadata(folder: str, cfg, export_format: str, files: dict, **fields) -> None:
    """Writes ``export.json``, keeping entries of earlier files of the same format still in the folder."""
    import json

    from exfuse_keras.export.common import METADATA_FILE, export_metadata, write_json

    path = os.path.join(folder, METADATA_FILE)
    known = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        if previous.get("format") == export_format:
            known = {name: entry for name, entry in previous.get("files", {}).items()
                     if os.path.isfile(os.path.join(folder, name))}
    write_json(path, export_metadata(cfg, export_format, **fields, files={**known, **files}))


def _megabytes(path: str) -> str:
    if os.path.isdir(path):
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)
    else:
        size = os.path.getsize(path)
    return f"{size / 1e6:.2f} MB"


def run(args) -> list[str]:
    """Exports as ``args`` say; returns the paths written."""
    from exfuse_keras.inference.arguments import protocol_from_arguments
    from exfuse_keras.inference.loading import load_run
    from exfuse_keras.inference.saved_model import is_saved_model
    from exfuse_keras.inference.segmenter import Segmenter

    _check_protocol_arguments(args)
    overrides = list(args.set) + ([f"export.max_side={args.max_side}"] if args.max_side is not None else [])
    if is_saved_model(args.weights):
        raise ValueError(f"--weights {args.weights} is already an export: pass the training run's folder or "
                         f".keras file")
    cfg, model = load_run(args.weights, args.config, overrides)
    protocol = Segmenter.resolve_protocol(cfg.eval, *protocol_from_arguments(args), args.sliding_window)
    graph_options = {"protocol": protocol, "with_probabilities": args.with_probabilities, "source": os.path.abspath(args.weights),
                     "overwrite": args.overwrite}
    if args.format == "saved_model":
        from exfuse_keras.export.saved_model import export_saved_model

        return [export_saved_model(cfg, model, args.output, **graph_options)]
    if args.format == "tf_serving":
        from exfuse_keras.export.tf_serving import CONFIG_NAME, export_tf_serving

        path = export_tf_serving(cfg, model, args.output, args.model_name, args.version, args.serving_root,
                                 **graph_options)
        return [path, os.path.join(args.output, CONFIG_NAME)]
    os.makedirs(args.output, exist_ok=True)
    if args.format == "tflite":
        from exfuse_keras.export.tflite import CALIBRATED, export_tflite

        size = tuple(args.tflite_size or cfg.export.tflite_size)
        targets = {q: os.path.join(args.output, f"{args.model_name}_{q}.tflite") for q in args.tflite_quantization}
        _refuse_existing(targets.values(), args.overwrite)
        files = {}
        from tqdm import tqdm

        from exfuse_keras.data.progress import bar_disable

        for quantization, path in tqdm(targets.items(), desc="TFLite files", unit="file",
                                       disable=bar_disable(len(targets) > 1)):
            export_tflite(cfg, model, path, quantization, size, args.calibration_batches)
            files[os.path.basename(path)] = {"quantization": quantization,
                                             "calibration_batches": args.calibration_batches
                                             if quantization in CALIBRATED else None}
            if quantization == "int8_io":
                files[os.path.basename(path)].update(
                    input_dtype="int8", output_dtype="int8",
                    note="int8 in: each RGB value less 128; int8 logits out (scale and zero point in the file); "
                         "argmax them as they are")
        _update_metadata(args.output, cfg, "tflite", files, source=os.path.abspath(args.weights),
                         input={"name": "image", "shape": [1, *size, 3], "dtype": "float32",
                                "values": "RGB 0-255 (an int8_io file: int8, the values less 128)"},
                         output={"name": "logits", "shape": [1, *size, cfg.data.num_classes], "dtype": "float32"})
        return list(targets.values())
    from exfuse_keras.export.onnx import export_onnx

    path = os.path.join(args.output, f"{args.model_name}.onnx")
    _refuse_existing([path], args.overwrite)
    export_onnx(model, path, args.opset)
    _update_metadata(args.output, cfg, "onnx", {os.path.basename(path): {"opset": args.opset}},
                     source=os.path.abspath(args.weights),
                     input={"name": "images", "shape": ["N", "H", "W", 3], "dtype": "float32",
                            "values": "RGB 0-255, H and W multiples of 32"},
                     output={"name": "logits", "shape": ["N", "H", "W", cfg.data.num_classes], "dtype": "float32"})
    return [path]


def _refuse_existing(paths, overwrite: bool) -> None:
    for path in paths:
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path}: exists (pass --overwrite to replace it)")


def main(argv=None) -> int:
    args = parse_args(argv)
    import exfuse_keras.task  # noqa: F401  (registers ExFuseImageSegmenter: --weights may be a task's .keras)
    from exfuse_keras.atomic import check_folder, os_error_line
    from exfuse_keras.config import ConfigError

    try:
        check_folder(args.output, "--output")
        paths = run(args)
    except (ConfigError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # missing weights, existing output, a full disk, a read-only folder
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path} ({_megabytes(path)})")
    return 0
