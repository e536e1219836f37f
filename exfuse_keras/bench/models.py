"""The models the inference benchmarks time: the quick start, ExFuse-ResNet-101 and ExFuse-MobileNetV3."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("quickstart", "r101", "mobilenetv3", "mobilenetv3_min")


def benchmark_models(run: str, models: Sequence[str] = MODELS) -> Iterator[tuple]:
    """(name, config, keras model) for each of ``models``, one at a time (the session is
    cleared between them): ``"quickstart"``, the trained run in ``run`` if it exists, else a
    randomly initialised one; ``"r101"``, ExFuse-ResNet-101, and ``"mobilenetv3"``,
    ExFuse-MobileNetV3-Large (configs/exfuse_mobilenetv3.yaml), and ``"mobilenetv3_min"``, the
    same with the minimalistic backbone (configs/exfuse_mobilenetv3_min.yaml: ReLU for hard-swish,
    no squeeze-excite, 3x3 kernels, every int8 op on XNNPACK), randomly initialised (timing does
    not depend on the weights and ImageNet weights need a download)."""
    import keras

    from exfuse_keras.config import load_config
    from exfuse_keras.inference.loading import load_run
    from exfuse_keras.model import build_model

    if "quickstart" in models:
        if os.path.isdir(run):
            cfg, model = load_run(run)
            yield "quick start (trained)", cfg, model
        else:
            cfg = load_config(str(ROOT / "configs" / "quickstart.yaml"))
            yield "quick start (random init)", cfg, build_model(cfg)
        keras.backend.clear_session()
    if "r101" in models:
        cfg = load_config(str(ROOT / "configs" / "exfuse_resnet101.yaml"), ["model.backbone.weights=null"])
        yield "ExFuse-ResNet-101 (random init)", cfg, build_model(cfg)
        keras.backend.clear_session()
    if "mobilenetv3" in models:
        cfg = load_config(str(ROOT / "configs" / "exfuse_mobilenetv3.yaml"), ["model.backbone.weights=null"])
        yield "ExFuse-MobileNetV3-Large (random init)", cfg, build_model(cfg)
        keras.backend.clear_session()
    if "mobilenetv3_min" in models:
        cfg = load_config(str(ROOT / "configs" / "exfuse_mobilenetv3_min.yaml"), ["model.backbone.weights=null"])
        yield "ExFuse-MobileNetV3-Large-minimalistic (random init)", cfg, build_model(cfg)
