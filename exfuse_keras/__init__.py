"""ExFuse (Zhang et al., ECCV 2018) semantic segmentation in Keras 3 on TensorFlow."""

from exfuse_keras.config import Config, ConfigError, load_config, save_config

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "build_model", "load_config", "save_config"]


def __getattr__(name):
    # build_model imports TensorFlow; keep `load_config` usable without paying for that import.
    if name == "build_model":
        from exfuse_keras.model import build_model
        return build_model
    raise AttributeError(f"module 'exfuse_keras' has no attribute {name!r}")
