"""Shared fixtures (the helpers they use are in tests/helpers.py)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from exfuse_keras.config import config_from_dict  # noqa: E402
from tests.helpers import tiny_config_dict  # noqa: E402


@pytest.fixture
def tiny_config():
    return config_from_dict(tiny_config_dict())


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def quickstart_run():
    """The quick-start network trained on the fixture's short recipe (trained once per cache key;
    see tests/quickstart_model.py):
    ``{"run_dir", "data_root", "val_miou", "train_seconds", "epochs"}``."""
    from tests.quickstart_model import trained_quickstart

    return trained_quickstart("fixture")


@pytest.fixture(scope="session")
def quickstart_full_run():
    """The quick start trained on its full recipe (``make test-slow`` only; see tests/quickstart_model.py)."""
    from tests.quickstart_model import trained_quickstart

    return trained_quickstart("full")
