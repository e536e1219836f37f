"""Progress bars only where a person watches them.

A tqdm bar redraws itself with carriage returns; in a log file or a CI console that is one
line per update. Every bar here is drawn only when its stream is a terminal
(``tqdm(disable=None)``), and TensorFlow Datasets' own bars (record preparation) likewise.
"""

from __future__ import annotations

import sys


def bar_disable(progress: bool):
    """tqdm's ``disable`` for a bar the caller wants (``progress``): ``None`` draws it only on a
    terminal, ``True`` never."""
    return None if progress else True


def tfds_progress_bars(stream=None) -> bool:
    """Turns TensorFlow Datasets' bars on when ``stream`` (default stderr) is a terminal, off
    otherwise; returns whether they are on."""
    import tensorflow_datasets as tfds

    stream = sys.stderr if stream is None else stream
    on = bool(getattr(stream, "isatty", lambda: False)())
    (tfds.enable_progress_bar if on else tfds.disable_progress_bar)()
    return on
