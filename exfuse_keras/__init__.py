"""ExFuse (Zhang et al., ECCV 2018, arXiv 1804.03821) semantic segmentation in Keras 3 on TensorFlow.

The public entry points: ``load_config`` / ``save_config`` (``exfuse_keras/config.py``),
``build_model`` (``exfuse_keras/model.py``) and the Keras task ``ExFuseImageSegmenter``
(``exfuse_keras/task.py``: ``from_preset``, ``compile()`` with the config's defaults,
``predict(images)``); importing the last two imports TensorFlow. Example::

    from exfuse_keras import build_model, load_config

    cfg = load_config("configs/quickstart.yaml", ["train.batch_size=16"])
    model = build_model(cfg)      # outputs {"logits": [N, H, W, C], "ecre": ..., "ss_res2": ...}

See docs/design.md for the modules and docs/training.md for training.
"""

from exfuse_keras.config import Config, ConfigError, load_config, save_config

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "ExFuseImageSegmenter", "build_model", "load_config", "save_config"]


def __getattr__(name):
    # build_model imports TensorFlow; keep `load_config` usable without paying for that import.
    if name == "build_model":
        from exfuse_keras.model import build_model
        return build_model
    if name == "ExFuseImageSegmenter":
        from exfuse_keras.task import ExFuseImageSegmenter
        return ExFuseImageSegmenter
    raise AttributeError(f"module 'exfuse_keras' has no attribute {name!r}")
