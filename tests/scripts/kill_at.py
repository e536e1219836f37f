"""Runs train.py's ``main``, killing its own process with SIGKILL at one precise point.

    python tests/scripts/kill_at.py POINT N [--snapshots DIR] -- <train.py arguments>

POINT is where the Nth call in this process (counted from 1) kills it:

- ``train_step``: before a training step (``CallbackList.on_train_batch_begin``);
- ``val_step``: before a validation step (``CallbackList.on_test_batch_begin``);
- ``rename:best.keras``, ``rename:last.keras``: an atomic write of that file, its temporary
  written and synced, before it is renamed into place;
- ``backup_weights``: a backup write, its weights file written in the temporary folder,
  before its metadata;
- ``backup_swap``: a backup write that replaces a backup (not the first one), the new folder
  swapped in (``renameat2``), before the old one, now at the temporary name, is deleted; where
  the file system cannot swap, between the fallback's two renames (the old folder moved aside,
  the new one not yet in);
- ``none``: no kill.

``--snapshots DIR`` copies each backup's weights to ``DIR/epoch_<E>.weights.h5`` as it is
written (the uninterrupted reference run: killed runs' backups are compared with them).
Patches are applied here only; the code under test is unchanged. Exits with status 90 if the
run ends without reaching the kill point.
"""

import argparse
import os
import shutil
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402

from exfuse_keras import atomic  # noqa: E402
from exfuse_keras.training.callbacks import AtomicBackupAndRestore  # noqa: E402
from exfuse_keras.training.run import main as train_main  # noqa: E402

NOT_REACHED = 90
calls = 0


def _count() -> bool:
    """True at the Nth counted call."""
    global calls
    calls += 1
    return calls == args.n


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _before(owner, name, counts=lambda *a, **k: True):
    """Kills before ``owner.name`` runs, at the Nth call for which ``counts(*args)`` holds."""
    original = getattr(owner, name)

    def patched(*a, **k):
        if counts(*a, **k) and _count():
            _die()
        return original(*a, **k)

    setattr(owner, name, patched)


def _is_backup(path) -> bool:
    return os.path.basename(os.fspath(path)) == "backup"


def _patch(point: str) -> None:
    if point == "train_step":
        _before(keras.callbacks.CallbackList, "on_train_batch_begin")
    elif point == "val_step":
        _before(keras.callbacks.CallbackList, "on_test_batch_begin")
    elif point.startswith("rename:"):
        _before(atomic, "_move_into_place", lambda tmp, target: os.path.basename(target) == point[len("rename:"):])
    elif point == "backup_weights":
        save_weights = keras.Model.save_weights

        def patched(self, filepath, *a, **k):
            save_weights(self, filepath, *a, **k)
            if os.path.basename(os.path.dirname(filepath)).startswith("backup.partial-") and _count():
                _die()

        keras.Model.save_weights = patched
    elif point == "backup_swap":
        exchange, swap_by_renames = atomic._exchange, atomic._swap_by_renames

        def patched_exchange(a, b):
            swapped = exchange(a, b)
            if swapped and _is_backup(b) and _count():
                _die()
            return swapped

        def patched_swap_by_renames(tmp, target):
            if _is_backup(target):
                os.rename(target, f"{target}.old-{os.getpid()}")
                if _count():
                    _die()
                os.rename(tmp, target)
                atomic._remove(f"{target}.old-{os.getpid()}")
                return
            swap_by_renames(tmp, target)

        atomic._exchange, atomic._swap_by_renames = patched_exchange, patched_swap_by_renames
    elif point != "none":
        raise SystemExit(f"kill_at.py: unknown point {point!r}")


def _snapshot(folder: str) -> None:
    save = AtomicBackupAndRestore._save_model

    def patched(self):
        save(self)
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(self.backup_dir, os.path.basename(self._weights_path)),
                    os.path.join(folder, f"epoch_{self._current_epoch}.weights.h5"))

    AtomicBackupAndRestore._save_model = patched


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("point")
    parser.add_argument("n", type=int)
    parser.add_argument("--snapshots")
    split = sys.argv.index("--")
    args = parser.parse_args(sys.argv[1:split])
    _patch(args.point)
    if args.snapshots:
        _snapshot(args.snapshots)
    status = train_main(sys.argv[split + 1:])
    if args.point != "none":
        print(f"kill_at.py: the run ended before {args.point} call {args.n} ({calls} calls)", file=sys.stderr)
        sys.exit(NOT_REACHED)
    sys.exit(status)
