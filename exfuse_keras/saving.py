"""Reading a ``.keras`` file a user names (``--weights``, ``train.init.from_run``,
``model.backbone.weights``) with one-line errors that name the file and what was expected.

Keras' own messages mislead here: a truncated or non-zip file is reported as "File not found",
an unregistered layer class as a many-line deserialisation dump. Files are loaded in Keras'
safe mode, which refuses the Python code of a ``Lambda`` layer.

    model = load_model_file("runs/quickstart/best.keras")
"""

from __future__ import annotations

import os
import re
import zipfile


class ModelFileError(ValueError):
    """A ``.keras`` file that is missing, not a Keras archive, refused by safe mode, or not the
    model it should be; one line ``<file>: <problem>``."""


def load_model_file(path) -> "keras.Model":  # noqa: F821
    """The model in the ``.keras`` file ``path`` (``compile=False``, safe mode).

    Raises:
        ModelFileError: no such file; not a complete zip archive (truncated, or another format);
            an archive without Keras' ``config.json``; a ``Lambda`` layer (safe mode); a layer
            class neither Keras nor exfuse_keras defines.
    """
    import keras

    import exfuse_keras.layers  # noqa: F401  (registers the custom layers for load_model)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a complete .keras file (a .keras file is a zip archive; these "
                             f"{os.path.getsize(path)} bytes are truncated or another format)")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ModelFileError(f"{path}: a zip archive without config.json, not a .keras model file")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError) as err:
        message = str(err)
        if "Lambda" in message and "safe_mode" in message:
            raise ModelFileError(f"{path}: holds a Lambda layer (Python code), which Keras' safe mode refuses to "
                                 f"load; expected an ExFuse model saved by train.py") from None
        unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", message)
        if unknown:
            raise ModelFileError(f"{path}: holds the layer class {unknown.group(1)!r}, which neither Keras nor "
                                 f"exfuse_keras defines; expected an ExFuse model saved by train.py") from None
        first_line = message.strip().splitlines()[0] if message.strip() else type(err).__name__
        raise ModelFileError(f"{path}: could not load this .keras file ({first_line})") from None
