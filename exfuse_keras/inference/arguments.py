"""Command-line arguments shared by evaluate.py, predict.py and the gallery: the model and the test-time protocol."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from exfuse_keras.inference.tta import PAPER_SCALES


def _scales(text: str) -> list[float]:
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        scales = []
    if not scales or any(s <= 0 for s in scales):
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas (0.5,1.0,1.5), got {text!r}")
    return scales


def _window(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        crop, stride = (int(p) for p in parts)
    except ValueError:
        crop = stride = 0
    if not 0 < stride <= crop:
        raise argparse.ArgumentTypeError(f"expected CROP,STRIDE integers with 0 < STRIDE <= CROP (512,341), "
                                         f"got {text!r}")
    return crop, stride


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tta``, ``--scales``, ``--flip/--no-flip``, ``--sliding-window`` (shared with predict.py)."""
    parser.add_argument("--tta", action="store_true",
                        help="the paper's multi-scale + flip protocol: scales 0.5,0.75,1,1.25,1.5,1.75 and flip")
    parser.add_argument("--scales", type=_scales, metavar="S1,S2,...", help="test scales (override --tta's)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="also average horizontally flipped views (default: on with --tta)")
    parser.add_argument("--sliding-window", type=_window, metavar="CROP,STRIDE",
                        help="predict overlapping CROPxCROP windows STRIDE apart, blended by averaging "
                             "their centre parts (exfuse_keras/inference/sliding.py)")


def protocol_from_arguments(args) -> tuple[Optional[list[float]], Optional[bool]]:
    """(scales, flip) asked for on the command line; None where the config's should apply."""
    scales = args.scales if args.scales is not None else list(PAPER_SCALES) if args.tta else None
    flip = args.flip if args.flip is not None else True if args.tta else None
    return scales, flip


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights``, ``--config`` and repeatable ``--set`` (the model to load)."""
    parser.add_argument("--weights", required=True, help="a training run's folder or a .keras file")
    parser.add_argument("--config", help="config (default: the run folder's config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def segmenter_from_arguments(args):
    """The ``Segmenter`` of ``--weights/--config/--set``, or None after printing one ``error:`` line."""
    from exfuse_keras.config import ConfigError
    from exfuse_keras.inference.segmenter import Segmenter

    try:
        return Segmenter.load(args.weights, args.config, args.set)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None
