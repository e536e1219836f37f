"""The job behind train.py.

Today it resolves the config, writes it into the run directory and prints the model's
per-part parameters and FLOPs; fitting on the data pipeline is the training issue's.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train ExFuse.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--model-dir", required=True, help="run directory (config, checkpoints, logs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.batch_size=8 (repeatable)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from exfuse_keras.config import ConfigError, load_config, save_config

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.makedirs(args.model_dir, exist_ok=True)
    save_config(cfg, os.path.join(args.model_dir, "config.yaml"))

    from exfuse_keras.model import build_model
    from exfuse_keras.summary import format_summary, summarize

    model = build_model(cfg)
    size = cfg.data.crop_size
    print(f"{args.config}: outputs {list(model.output.keys())}; resolved config in "
          f"{os.path.join(args.model_dir, 'config.yaml')}")
    print(format_summary(summarize(model, size, size), size, size))
    return 0
