"""Shared fixtures and helpers: tiny configs and the layer round-trip checks every layer gets."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from exfuse_keras.config import config_from_dict  # noqa: E402


def tiny_config_dict(**model_overrides):
    """A tiny ExFuse (every module on) for fast tests: ~0.3 M parameters, 5 classes."""
    model = {
        "backbone": {"blocks": [1, 1, 1, 1], "cardinality": 1, "base_width": 64, "base_channels": 8,
                     "stem_channels": 8, "preprocessing": "scale"},
        "gcn_kernel": 5,
        "seb": {"enabled": True},
        "ecre": {"enabled": True, "supervised": True},
        "dap": {"enabled": True, "kernel": 3},
        "ss": {"levels": ["res2", "res3", "res4"], "channels": 16},
    }
    for key, value in model_overrides.items():
        model[key] = value
    return {"model": model,
            "data": {"num_classes": 5, "class_names": ["bg", "a", "b", "c", "d"], "crop_size": 64}}


@pytest.fixture
def tiny_config():
    return config_from_dict(tiny_config_dict())


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def assert_layer_roundtrip(layer, inputs, tmp_path, atol=1e-6):
    """get_config/from_config, a .keras save + safe-mode reload, and unknown height/width."""
    import keras

    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config

    as_list = isinstance(inputs, (list, tuple))
    arrays = list(inputs) if as_list else [inputs]
    symbolic = [keras.Input((None, None, a.shape[-1])) for a in arrays]
    out = layer(symbolic if as_list else symbolic[0])
    model = keras.Model(symbolic, out)
    expected = model.predict(arrays, verbose=0)
    path = os.path.join(tmp_path, f"{layer.name}.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(arrays, verbose=0), expected, atol=atol)
    restored = [lay for lay in reloaded.layers if lay.name == layer.name][0]
    assert restored.get_config() == config
    return expected


@pytest.fixture(scope="session")
def quickstart_run():
    """The trained quick-start run (trained once per cache key; see tests/quickstart_model.py):
    ``{"run_dir", "data_root", "val_miou", "train_seconds", "epochs"}``."""
    from quickstart_model import trained_quickstart

    return trained_quickstart()
