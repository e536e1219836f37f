"""Atomic writes (exfuse_keras/atomic.py): an exception or a SIGKILL while writing leaves the old
file or folder at the target path, a finished write replaces it."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from exfuse_keras import atomic
from exfuse_keras.atomic import atomic_path, atomic_write, partial_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree(path):
    """{relative path: sha256} of a file or every file under a folder."""
    if os.path.isfile(path):
        return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    return {os.path.relpath(os.path.join(folder, name), path):
            hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for folder, _, names in os.walk(path) for name in names}


def _old_folder(path):
    os.makedirs(os.path.join(path, "variables"))
    open(os.path.join(path, "saved_model.pb"), "wb").write(b"old graph")
    open(os.path.join(path, "variables", "variables.index"), "wb").write(b"old index")


def _leftovers(folder):
    return sorted(name for name in os.listdir(folder) if ".partial-" in name or ".old-" in name)


def test_a_finished_file_write_replaces_the_old_file_and_keeps_the_suffixes(tmp_path):
    target = tmp_path / "best.keras"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp == str(tmp_path / f"best.partial-{os.getpid()}.keras")
        assert target.read_text() == "old"
        open(tmp, "w").write("new")
    assert target.read_text() == "new"
    assert partial_path(tmp_path / "latest.weights.h5").endswith(f"latest.partial-{os.getpid()}.weights.h5")
    atomic_write(tmp_path / "new" / "report.json", "{}")  # creates the folder
    atomic_write(tmp_path / "model.tflite", b"\x00\x01")
    assert (tmp_path / "new" / "report.json").read_text() == "{}"
    assert (tmp_path / "model.tflite").read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == []


def test_an_exception_inside_the_block_leaves_the_old_file_or_folder(tmp_path):
    target = tmp_path / "last.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    folder = tmp_path / "saved_model"
    _old_folder(folder)
    before = _tree(folder)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(folder, directory=True) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "saved_model.pb"), "wb").write(b"half")
            raise KeyboardInterrupt
    assert _tree(folder) == before
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "never.json"):
            pass
    assert _leftovers(tmp_path) == [] and not (tmp_path / "never.json").exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_finished_folder_write_swaps_the_folders(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    folder = tmp_path / "export" / "3"
    with atomic_path(folder, directory=True) as tmp:  # a new target
        assert tmp == f"{folder}.partial-{os.getpid()}"
        os.makedirs(tmp)
        open(os.path.join(tmp, "first"), "w").write("1")
    assert _tree(folder).keys() == {"first"}
    with atomic_path(folder, directory=True) as tmp:
        _old_folder(tmp)
    assert _tree(folder).keys() == {"saved_model.pb", os.path.join("variables", "variables.index")}
    assert _leftovers(folder.parent) == []


def test_a_kill_between_the_two_renames_is_undone_by_the_next_write(tmp_path):
    """The fallback's window (no renameat2): the old folder renamed away, the new one not yet in."""
    folder = tmp_path / "saved_model"
    _old_folder(folder)
    before = _tree(folder)
    os.rename(folder, f"{folder}.old-12345")
    atomic.recover(str(folder))
    assert _tree(folder) == before and _leftovers(tmp_path) == []


_SLOW_WRITER = """
import os, sys, time
from exfuse_keras.atomic import atomic_path
target, kind = sys.argv[1], sys.argv[2]
with atomic_path(target, directory=kind == "dir") as tmp:
    if kind == "dir":
        os.makedirs(os.path.join(tmp, "variables"))
        open(os.path.join(tmp, "saved_model.pb"), "wb").write(b"new, half written")
    else:
        f = open(tmp, "wb")
        f.write(b"new, half written")
        f.flush()
    print("writing", flush=True)
    time.sleep(120)
"""


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_sigkill_in_the_middle_of_a_write_leaves_the_old_target(tmp_path, kind):
    target = tmp_path / ("model.tflite" if kind == "file" else "saved_model")
    if kind == "file":
        target.write_bytes(b"old model")
    else:
        _old_folder(target)
    before = _tree(target)
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target), kind], stdout=subprocess.PIPE,
                              text=True, env=_env())
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert _tree(target) == before
    # What the killed writer left is its temporary sibling only, never read; the next write replaces the target.
    assert _leftovers(tmp_path) == [os.path.basename(partial_path(target, kind == "dir")).replace(
        f"partial-{os.getpid()}", f"partial-{writer.pid}")]
    with atomic_path(target, directory=kind == "dir") as tmp:
        if kind == "dir":
            _old_folder(tmp)
            open(os.path.join(tmp, "saved_model.pb"), "wb").write(b"new graph")
        else:
            open(tmp, "wb").write(b"new model")
    assert _tree(target) != before


_EXPORT = """
import sys
import keras
from exfuse_keras.config import config_from_dict
from exfuse_keras.export.saved_model import export_saved_model
from exfuse_keras.model import build_model
from tests.helpers import tiny_config_dict
cfg = config_from_dict(tiny_config_dict())
keras.utils.set_random_seed(0)
model = build_model(cfg)
print("exporting", flush=True)
export_saved_model(cfg, model, sys.argv[1], overwrite=True)
print("done", flush=True)
"""


def test_a_saved_model_export_killed_while_writing_leaves_the_previous_export(tmp_path):
    target = tmp_path / "export"
    _old_folder(target)
    before = _tree(target)
    exporter = subprocess.Popen([sys.executable, "-c", _EXPORT, str(target)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=ROOT)
    assert exporter.stdout.readline().strip() == "exporting"
    partial = f"{target}.partial-{exporter.pid}"
    deadline = time.time() + 120
    # Killed once the export has begun writing its files (the graph's variables come first).
    while time.time() < deadline and exporter.poll() is None and not (os.path.isdir(partial) and _tree(partial)):
        time.sleep(0.005)
    assert exporter.poll() is None, "the export finished before it could be killed"
    os.kill(exporter.pid, signal.SIGKILL)
    exporter.wait()
    assert _tree(target) == before, "the previous export must be intact"
    assert os.path.isdir(partial), "killed while writing"

    # A finished export replaces the old folder as a whole.
    import keras
    import tensorflow as tf

    from exfuse_keras.config import config_from_dict
    from exfuse_keras.export.saved_model import export_saved_model
    from exfuse_keras.model import build_model
    from tests.helpers import tiny_config_dict

    cfg = config_from_dict(tiny_config_dict())
    keras.utils.set_random_seed(0)
    export_saved_model(cfg, build_model(cfg), str(target), overwrite=True)
    assert "saved_model.pb" in _tree(target) and _tree(target)["saved_model.pb"] != before["saved_model.pb"]
    assert "serving_default" in tf.saved_model.load(str(target)).signatures
    assert _leftovers(tmp_path) == [os.path.basename(partial)]


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_remove_stale_deletes_only_the_named_targets_temporaries_of_dead_processes(tmp_path):
    dead, alive = _dead_pid(), 1
    (tmp_path / "best.keras").write_text("best")
    for name in (f"best.partial-{dead}.keras", f"best.partial-{alive}.keras", f"best.partial-{os.getpid()}.keras",
                 f"eval_val.partial-{dead}.json"):
        (tmp_path / name).write_text("half")
    _old_folder(tmp_path / f"backup.partial-{dead}")
    _old_folder(tmp_path / f"backup.old-{dead}")  # the swap's fallback killed between its renames: no backup
    removed = atomic.remove_stale(tmp_path, ["best.keras", "backup"])
    assert sorted(os.path.basename(path) for path in removed) == sorted(
        [f"best.partial-{dead}.keras", f"backup.partial-{dead}"])
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["backup", "best.keras", f"best.partial-{alive}.keras", f"best.partial-{os.getpid()}.keras",
         f"eval_val.partial-{dead}.json"])
    assert "saved_model.pb" in _tree(tmp_path / "backup")  # the old folder, put back whole
    _old_folder(tmp_path / f"backup.old-{dead}")  # beside its target: the swap was complete
    assert [os.path.basename(p) for p in atomic.remove_stale(tmp_path, ["backup"])] == [f"backup.old-{dead}"]
    assert atomic.remove_stale(tmp_path / "missing", ["backup"]) == []


def test_atomic_remove_deletes_a_file_or_folder_whole(tmp_path):
    _old_folder(tmp_path / "backup")
    (tmp_path / "last.keras").write_text("model")
    atomic.atomic_remove(tmp_path / "backup")
    atomic.atomic_remove(tmp_path / "last.keras")
    atomic.atomic_remove(tmp_path / "never_written")
    assert os.listdir(tmp_path) == []
