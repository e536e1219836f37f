"""TF Serving layout: ``<base>/<model_name>/<version>/`` (a SavedModel) and ``<base>/models.config``.

TF Serving watches ``<base_path>/<model_name>`` and serves the highest numeric version folder;
versions are never overwritten in place, so a new export gets the next number. ``models.config``
(a ``model_config_list`` text proto, for ``--model_config_file``) lists every model folder under
``<base>`` with ``base_path`` = ``<serving_root>/<model_name>``: the path *inside* the server's
container, ``/models`` when ``<base>`` is mounted there (docs/deployment.md, "Serving")::

    docker run -p 8501:8501 -p 8500:8500 -v "$PWD/export:/models" tensorflow/serving \\
        --model_config_file=/models/models.config
"""

from __future__ import annotations

import os
import re
from typing import Optional

from exfuse_keras.export.saved_model import export_saved_model

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CONFIG_NAME = "models.config"


def versions(model_dir: str) -> list[int]:
    """The numeric version folders of a TF Serving model folder, sorted."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(name) for name in os.listdir(model_dir)
                  if name.isdigit() and os.path.isdir(os.path.join(model_dir, name)))


def models_config(base: str, serving_root: str = "/models") -> str:
    """The ``model_config_list`` text proto for every model folder (with a version) under ``base``."""
    names = sorted(name for name in os.listdir(base) if versions(os.path.join(base, name)))
    entries = "".join(f'  config {{\n    name: "{name}"\n    base_path: "{serving_root.rstrip("/")}/{name}"\n'
                      f'    model_platform: "tensorflow"\n  }}\n' for name in names)
    return f"model_config_list {{\n{entries}}}\n"


def export_tf_serving(cfg, model, base: str, model_name: str = "exfuse", version: Optional[int] = None,
                      serving_root: str = "/models", **saved_model_options) -> str:
    """Exports the SavedModel to ``<base>/<model_name>/<version>/``, rewrites ``<base>/models.config``
    and returns the version folder.

    Args:
        model_name: the name clients ask for (``/v1/models/<model_name>:predict``).
        version: a positive integer; default one more than the highest already there (or 1).
        serving_root: where ``base`` is mounted in the server (``base_path`` in models.config).
        saved_model_options: ``export_saved_model``'s keyword arguments (``overwrite`` replaces
            an existing version).

    Raises:
        ValueError: a model name TF Serving cannot serve, or a version below 1.
        FileExistsError: the version exists (without ``overwrite``).
    """
    if not MODEL_NAME_PATTERN.match(model_name):
        raise ValueError(f"--model-name {model_name!r}: expected letters, digits, '_', '-' or '.' "
                         f"(it is part of the REST URL)")
    model_dir = os.path.join(base, model_name)
    if version is None:
        version = (versions(model_dir) or [0])[-1] + 1
    if version < 1:
        raise ValueError(f"--version {version}: TF Serving versions are positive integers")
    from exfuse_keras.atomic import atomic_write

    # The version folder is swapped in whole (its temporary name is not a number, so TF Serving
    # never loads a half-written version); models.config is replaced atomically.
    path = export_saved_model(cfg, model, os.path.join(model_dir, str(version)), **saved_model_options)
    atomic_write(os.path.join(base, CONFIG_NAME), models_config(base, serving_root))
    return path
