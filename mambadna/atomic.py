"""Atomic outputs: a file or folder appears whole under its final name, or not at all.

Every writer of the package goes through one of two context managers::

    with atomic_file("out/predictions.tsv") as tmp:      # a Path to write
        frame.to_csv(tmp, sep="\\t")
    with atomic_directory("runs/store") as tmp:          # a new, empty folder
        (tmp / "store.json").write_text(...)

The block writes to a hidden temporary name beside the target (same folder, so the final
``os.replace`` is atomic within the filesystem). When the block ends normally the new content is
flushed to disk (``fsync`` of the files, then of the folder after the rename) and renamed into
place; when it raises anything (``KeyboardInterrupt`` and ``SystemExit`` included) the
temporary file or folder is deleted and the target is left as it was. SIGTERM and SIGHUP, whose
default action would kill the process without cleaning up, are turned into ``SystemExit`` while
a block runs (main thread only, and only where no other handler is installed), so a cluster
scheduler stopping a job does not leave temporary files behind either.

``check(target)``, if given, says whether the target may be written: it runs before the block
(so a bad output path fails before any work) and again just before the rename if the target
appeared in the meantime (so nothing is clobbered). Without ``check`` an existing target is
replaced. Torch-free, imports nothing of mambadna above ``errors``.

SIGKILL (or a power cut) cannot be caught: its temporary stays behind. Temporary names carry
the writer's host and process id (``.NAME.HOST-PID.RANDOM.tmp``), so the next write into the
same folder removes those of processes that no longer run on this host (``remove_stale``),
and only those: other files, and temporaries of live processes or of other hosts sharing the
folder, are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mambadna.errors import OutputError, OutputExistsError

Check = Callable[[Path], object]
"""Raises (a MambaDNAError saying why and how to fix it) if the target may not be written."""

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                 if hasattr(signal, name))
_active = 0  # open blocks (main thread) while our signal handlers are installed
_previous: dict[int, object] = {}


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)\.[0-9a-f]{8}"
                        r"\.(?:tmp|old)$")


def temporary_name(path: Path, tag: str = "tmp") -> Path:
    """A hidden, unique name beside ``path`` (same folder, so the final rename is atomic),
    naming this host and process so that a later run can tell a dead writer's leftovers."""
    return path.parent / f".{path.name}.{_HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}.{tag}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or a pid we cannot judge): keep its file
    return True


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries our writers left in ``folder`` when killed (SIGKILL, power cut):
    names of ``temporary_name``'s form whose process no longer runs on this host. Returns what
    was removed. Nothing else is touched (a live writer's temporary, another host's, any
    other hidden file)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        found = _TEMPORARY.match(entry.name) if entry.name.startswith(".") else None
        if (found is None or found["host"] != _HOST or int(found["pid"]) == os.getpid()
                or _running(int(found["pid"]))):
            continue
        _remove(Path(entry.path))
        removed.append(Path(entry.path))
    return removed


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """While the block runs, SIGTERM/SIGHUP raise SystemExit (so ``finally`` clauses run)."""
    global _active
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _active == 0:
        for signum in _SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                _previous[signum] = signal.signal(signum, _exit_on_signal)
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if _active == 0:
            for signum, handler in _previous.items():
                if signal.getsignal(signum) is _exit_on_signal:  # not replaced meanwhile
                    signal.signal(signum, handler)
            _previous.clear()


def signals_raise() -> contextlib.AbstractContextManager[None]:
    """While the block runs, SIGTERM and SIGHUP raise SystemExit (status 128 + signal) in the
    main thread, so ``finally`` clauses clean up: for writers that hold temporaries outside
    ``atomic_file`` (the part folders of a multi-device run)."""
    return _signals_raise()


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync folders; the rename is still atomic
    finally:
        os.close(fd)


MAX_FSYNC_FILES = 256
"""A folder with more files than this is flushed with one ``os.sync`` instead of one ``fsync``
per file (a token store of reads holds one file per read)."""


def _fsync_tree(folder: Path) -> None:
    walked = list(os.walk(folder))
    if sum(len(files) for _root, _dirs, files in walked) > MAX_FSYNC_FILES:
        os.sync()
        return
    for root, _dirs, files in walked:
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def _ours(err: OSError, *paths: Path) -> bool:
    """Whether ``err`` failed on one of our output paths (or inside the temporary folder)."""
    if not err.filename:
        return False
    failed = Path(os.fsdecode(err.filename))
    return any(failed == p or p in failed.parents for p in paths)


@contextlib.contextmanager
def _write_errors(path: Path, *ours: Path) -> Iterator[None]:
    """A full disk, a read-only filesystem, or a denied write of our own paths becomes an
    OutputError naming the target and the fix (the caller's finally removes the temporary)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        if OutputError.errno_of(err) is None and _SHORT_WRITE.search(str(err)):
            # numpy's tofile reports a short write without an errno ("N requested and M
            # written"): the filesystem (or quota) being full is what happened
            err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
        domain = OutputError.from_os_error(err, path, denied=_ours(err, path, *ours))
        if domain is None:
            raise
        raise domain from err


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, check: Check | None = None,
                fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it becomes ``path``.

    check: see the module docstring (None: an existing file is replaced).
    fsync: flush the file and the rename to disk (off only for scratch files).
    The parent folder must exist.
    """
    path = Path(path)
    if check is not None:
        check(path)
    remove_stale(path.parent)
    tmp = temporary_name(path)
    with _signals_raise(), _write_errors(path, tmp, path.parent):
        try:
            yield tmp
            if fsync:
                fsync_path(tmp)
            if check is not None and path.exists():
                check(path)  # appeared while we worked
            os.replace(tmp, path)
            if fsync:
                fsync_path(path.parent)
        finally:
            tmp.unlink(missing_ok=True)  # gone after a successful rename


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, check: Check | None = None,
                     merge: Sequence[str] = (), fsync: bool = True) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; on success it becomes ``path``.

    The parent folders are created. An existing ``path`` (which ``check`` accepted) is moved
    aside, replaced by the new folder, and then deleted, so ``path`` holds either the old or the
    new content. merge: for a folder that holds other things too (a model folder in a run): when
    ``path`` exists, move these names from the new folder into it one by one, in this order,
    deleting those the new folder lacks; nothing else in ``path`` is touched.
    """
    path = Path(path)
    if check is not None:
        check(path)
    tmp = temporary_name(path)
    old = temporary_name(path, "old")
    with _write_errors(path, tmp, path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    with _signals_raise(), _write_errors(path, tmp, path.parent):
        try:
            tmp.mkdir()  # not mkdtemp, which is private (0700): the folder gets the umask
            yield tmp
            if fsync:
                _fsync_tree(tmp)
            if check is not None and path.exists():
                check(path)  # appeared while we worked
            if merge and path.exists():
                _merge(tmp, path, merge)
                renamed_in = path
            else:
                if path.exists():
                    os.replace(path, old)
                os.replace(tmp, path)
                renamed_in = path.parent
            if fsync:
                fsync_path(renamed_in)
        finally:
            _remove(tmp)
            _remove(old)


def _merge(new: Path, path: Path, names: Sequence[str]) -> None:
    if not path.is_dir():
        raise OutputExistsError("exists and is not a folder", path=path,
                                fix="choose another output path")
    for name in names:
        if (new / name).exists():
            os.replace(new / name, path / name)
        elif (path / name).exists():
            _remove(path / name)  # a stale file of an earlier version
