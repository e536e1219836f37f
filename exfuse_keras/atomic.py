"""Atomic writes: a file or folder a user relies on is written beside its target and moved into
place in one step, so a kill (or an exception) at any moment leaves either the old one or the
new one at the target path, never a half-written one.

``atomic_path(target)`` yields the temporary sibling to write instead of ``target``:

- a file ``best.keras`` is written as ``best.partial-<pid>.keras`` (the suffixes are kept:
  Keras, TFLite and ONNX writers look at them) and moved over the target with ``os.replace``;
- a folder (``directory=True``; a SavedModel) is written as ``<target>.partial-<pid>`` and
  swapped with the old one by ``renameat2(RENAME_EXCHANGE)`` on Linux (one atomic step; the old
  folder, now at the temporary name, is then deleted). Where the file system lacks it (NFS,
  macOS), the old folder is renamed to ``<target>.old-<pid>`` first and the new one renamed in:
  a kill between those two renames leaves the target missing and the old folder beside it,
  which the next ``atomic_path`` of that target renames back.

The data is fsync-ed before the rename and the folder after it, so the rename never outlives
the bytes it points to (a power cut included). An exception inside the block deletes the
temporary sibling and leaves the target as it was. A SIGKILL can leave a ``*.partial-<pid>*``
sibling behind: it is never read, and the next write of the same target from the same process
id replaces it; ``remove_stale`` deletes those of processes no longer alive (train.py does so
for its run directory when it starts). ``atomic_remove`` deletes a file or folder in one step.

    with atomic_path("runs/x/last.keras") as tmp:
        model.save(tmp)
    with atomic_path("export/model", directory=True) as tmp:
        archive.write_out(tmp)
    atomic_write("runs/x/eval_val.json", json.dumps(report))
    atomic_remove("runs/x/backup")
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import re
import shutil
from typing import Iterator, Union

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def partial_path(target: str, directory: bool = False) -> str:
    """The temporary sibling of ``target`` this process writes (module doc)."""
    target = os.path.abspath(os.fspath(target))
    if directory:
        return f"{target}.partial-{os.getpid()}"
    folder, name = os.path.split(target)
    dot = name.find(".", 1)
    stem, suffixes = (name, "") if dot < 0 else (name[:dot], name[dot:])
    return os.path.join(folder, f"{stem}.partial-{os.getpid()}{suffixes}")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not supported here (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: str) -> None:
    if not os.path.isdir(path):
        _fsync_file(path)
        return
    for folder, _, names in os.walk(path):
        for name in names:
            if not os.path.islink(os.path.join(folder, name)):
                _fsync_file(os.path.join(folder, name))
        _fsync_dir(folder)


def _exchange(a: str, b: str) -> bool:
    """Swaps the paths ``a`` and ``b`` in one atomic step (Linux ``renameat2``); False where the
    C library or the file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(code)}")


def recover(target: str) -> None:
    """Puts back the old folder of a swap a kill interrupted (the rename fallback's window)."""
    target = os.path.abspath(os.fspath(target))
    if os.path.lexists(target):
        return
    old = sorted(glob.glob(glob.escape(target) + ".old-*"), key=os.path.getmtime)
    if old:
        os.rename(old[-1], target)


def _move_into_place(tmp: str, target: str) -> None:
    if not os.path.isdir(tmp) or not os.path.lexists(target):
        if os.path.isdir(target) and not os.path.islink(target):
            _swap_by_renames(tmp, target)
        else:
            os.replace(tmp, target)  # a file over a file (or a new path): atomic
        return
    if _exchange(tmp, target):
        _remove(tmp)  # now the old folder
        return
    _swap_by_renames(tmp, target)


def _swap_by_renames(tmp: str, target: str) -> None:
    old = f"{target}.old-{os.getpid()}"
    _remove(old)
    os.rename(target, old)
    os.rename(tmp, target)
    _remove(old)


@contextlib.contextmanager
def atomic_path(target: Union[str, os.PathLike], directory: bool = False) -> Iterator[str]:
    """Yields the temporary sibling to write instead of ``target``; moves it into place when the
    block ends without an exception (module doc). Creates the parent folder.

    Args:
        target: the file or folder users read.
        directory: the writer makes a folder (a SavedModel); it may create the yielded path or
            find it missing (it is not created beforehand).

    Raises:
        FileNotFoundError: the block wrote nothing at the yielded path.
    """
    target = os.path.abspath(os.fspath(target))
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    if directory:
        recover(target)
    tmp = partial_path(target, directory)
    _remove(tmp)
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(f"{tmp}: nothing was written for {target}")
        _fsync_tree(tmp)
        _move_into_place(tmp, target)
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, OSError) and err.filename is not None \
                and os.path.abspath(os.fspath(err.filename)).startswith(tmp):
            err.filename = target  # the user knows the target, not its temporary sibling
        raise
    _fsync_dir(folder)


def atomic_write(target: Union[str, os.PathLike], data: Union[str, bytes], encoding: str = "utf-8") -> str:
    """Writes ``data`` (text or bytes) to the file ``target`` atomically; returns ``target``."""
    with atomic_path(target) as tmp:
        if isinstance(data, str):
            with open(tmp, "w", encoding=encoding) as f:
                f.write(data)
        else:
            with open(tmp, "wb") as f:
                f.write(data)
    return os.fspath(target)


def atomic_remove(target: Union[str, os.PathLike]) -> None:
    """Deletes the file or folder ``target`` (if there) in one step: it is renamed to its
    temporary sibling, then deleted, so a kill leaves either the whole target or none of it
    (and a ``*.partial-<pid>`` that ``remove_stale`` deletes)."""
    target = os.path.abspath(os.fspath(target))
    if not os.path.lexists(target):
        return
    directory = os.path.isdir(target) and not os.path.islink(target)
    tmp = partial_path(target, directory)
    _remove(tmp)
    os.rename(target, tmp)
    _fsync_dir(os.path.dirname(target))
    _remove(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process (EPERM), or unknown: keep its files
    return True


def remove_stale(folder: Union[str, os.PathLike], names) -> list:
    """Deletes what killed writers left in ``folder`` for the targets ``names`` (e.g.
    ``["best.keras", "backup"]``): the temporary siblings ``best.partial-<pid>.keras`` and
    ``backup.partial-<pid>``, and an ``.old-<pid>`` folder beside its target (one without its
    target is put back, see ``recover``), of process ids not alive on this host. Returns the
    paths deleted.

    Only the named targets' siblings are touched: another program writing other files in the
    same folder (an evaluation's report) keeps its temporaries. Call it where one process owns
    ``names`` (a run directory, by the run writing it): a writer on another host sharing the
    folder would have a process id this host cannot see.
    """
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        return []
    patterns = []
    for name in names:
        dot = name.find(".", 1)
        stem, suffixes = (name, "") if dot < 0 else (name[:dot], name[dot:])
        patterns.append(re.compile(rf"{re.escape(stem)}\.partial-(\d+){re.escape(suffixes)}"))
        patterns.append(re.compile(rf"{re.escape(name)}\.partial-(\d+)"))
        patterns.append(re.compile(rf"{re.escape(name)}\.old-(\d+)"))
        recover(os.path.join(folder, name))
    removed = []
    for entry in sorted(os.listdir(folder)):
        for pattern in patterns:
            match = pattern.fullmatch(entry)
            if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
                _remove(os.path.join(folder, entry))
                removed.append(os.path.join(folder, entry))
                break
    return removed


def check_folder(path: Union[str, os.PathLike], flag: str) -> None:
    """Refuses, before any long work, an output folder ``path`` that is a file or lies under one.

    Raises:
        NotADirectoryError: naming the file in the way and ``flag`` (``os_error_line`` words it).
    """
    probe = os.path.abspath(os.fspath(path))
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise NotADirectoryError(errno.ENOTDIR, f"is a file, expected a folder ({flag} {os.fspath(path)})", probe)


def os_error_line(err: OSError) -> str:
    """One line for a failed read or write: ``<file>: <reason>`` (full disk, read-only folder...)."""
    if err.filename is None or not err.strerror:
        return str(err)
    return f"{os.fspath(err.filename)}: {err.strerror}"
