"""Atomic file writes: readers never see a half-written checkpoint, info file or label file.

Data goes to a temporary file in the destination folder, is flushed and fsynced, then renamed over
the destination (``os.replace`` is atomic on POSIX within one file system). On any exception the
temporary file is removed and the destination is untouched. An operating-system failure (a full
disk, a read-only file system, a path under a regular file) is one :class:`OutputError` that names
the file; :func:`check_writable_dir` and :func:`check_writable_file` find such failures before a
command does its work.
"""
import contextlib
import errno
import glob
import io
import json
import os
import tempfile
from typing import IO, Any, Iterator

TMP_PREFIX = ".tmp-"


class OutputError(ValueError):
    """An output file or folder cannot be written (its message names the path and the reason)."""


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def _probe_folder(target: str, folder: str, what: str) -> None:
    """Raises :class:`OutputError` (naming ``target``) unless ``folder``, or its nearest existing
    ancestor, is a folder in which a file can be created; the probe file is removed at once."""
    probe_dir = folder
    while not os.path.exists(probe_dir):
        parent = os.path.dirname(probe_dir)
        if parent == probe_dir:
            break
        probe_dir = parent
    if not os.path.isdir(probe_dir):
        raise OutputError(f"{what} {target}: {probe_dir} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX + "probe-", dir=probe_dir)
    except OSError as exc:
        raise OutputError(f"{what} {target}: cannot write in {probe_dir} ({_reason(exc)})") from None
    os.close(fd)
    os.unlink(probe)


def check_writable_dir(path: str, what: str = "output folder") -> None:
    """Raises :class:`OutputError` unless ``path`` is (or can be created as) a writable folder.
    Creates nothing that stays."""
    path = os.path.abspath(path)
    _probe_folder(path, path, what)


def check_writable_file(path: str, what: str = "output file") -> None:
    """Raises :class:`OutputError` unless ``path`` can be written: it is no folder, and its folder
    is writable or can be created. Creates nothing that stays."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise OutputError(f"{what} {path}: is a folder")
    _probe_folder(path, os.path.dirname(path), what)


def remove_stale_temporaries(directory: str) -> int:
    """Removes the temporary files that interrupted atomic writes into ``directory`` left behind;
    returns how many. Call it only where no other process is writing into ``directory``."""
    removed = 0
    for tmp in glob.glob(os.path.join(glob.escape(directory), TMP_PREFIX + "*")):
        if os.path.isfile(tmp):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
                removed += 1
    return removed


def append_line(path: str, line: str) -> None:
    """Appends one line of text to ``path`` (a log); an OS failure is an :class:`OutputError`."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)})") from None


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Context manager yielding a file object whose contents replace ``path`` atomically on exit.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (binary); ``kwargs`` go to ``open`` (e.g. encoding).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + os.path.basename(path) + "-", dir=directory)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)})") from None
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise OutputError(f"{path}: cannot write ({_reason(exc)}); "
                          f"{'the previous file is unchanged' if os.path.exists(path) else 'nothing was written'}"
                          ) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path: str, obj: Any, indent: int = 1) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically (an interrupted save leaves the old file intact).

    The file is serialised in memory first, so that a failing write (a full disk) is a plain
    ``OSError`` of the file, not an error inside torch's zip writer."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())
