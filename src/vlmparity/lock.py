"""The lock of an output folder: one invocation writes a folder at a time.

A command that writes a run (`run`, `compare --endpoint`, `demo`) holds an exclusive `flock` on
`<folder>/vlmparity.lock` from its start to its end, with its pid and command written in the file. The
operating system releases the lock when the process ends, however it ends (SIGKILL, power cut of a
local disk), so a dead run never leaves a stale lock: the file stays, the lock does not. A second
writer on the same folder stops at once (exit 3), naming the holder's pid.

Readers (`compare RUN_DIR`, `report`) take no lock: SQLite's write-ahead log gives them a consistent
view, and they write only their own report files (atomically). They do refuse a folder a run is writing
at that very moment (`check_not_written`), since its answers are incomplete, naming the pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from vlmparity.errors import ConfigError, VlmparityError

LOCK_FILENAME = "vlmparity.lock"

# Folders this process holds (resolved path -> [fd, depth]): holding is reentrant, and this process's
# own readers (compare --endpoint comparing what it just ran) are not refused.
_held: dict[Path, list[int]] = {}


class FolderInUse(VlmparityError):
    """Another live process holds the output folder."""


def lock_path(folder: Path) -> Path:
    return Path(folder) / LOCK_FILENAME


def _key(folder: Path) -> Path:
    return Path(os.path.abspath(folder))


def _holder(fd: int) -> str:
    """'`vlmparity run` (pid 123)' from the lock file's contents, as far as they can be read."""
    with suppress(OSError):
        raw = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
        if raw and raw[0].isdigit():
            command = " ".join(raw[1:]) or "vlmparity"
            return f"`{command}` (pid {int(raw[0])})"
    return "another vlmparity process (pid not yet recorded)"


@contextmanager
def hold(folder: Path, command: str = "vlmparity run") -> Iterator[None]:
    """Hold the exclusive lock of `folder` (created if missing) for the duration of the block."""
    key = _key(folder)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = _open(Path(folder))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(
                f"the output folder {folder} is in use by {_holder(fd)}: two invocations writing one folder "
                "would send every request twice and overwrite each other's files",
                hint="wait for it to finish (or stop it), or use another --output-path",
            ) from None
        except OSError as exc:  # a file system without locks (some network mounts): say so, go on
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            sys.stderr.write(
                f"vlmparity: note: cannot lock {lock_path(folder)} ({exc.strerror}); make sure no other "
                "invocation uses this folder at the same time\n"
            )
        with suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            _held.pop(key, None)
            with suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _open(folder: Path) -> int:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the output folder {folder}: {exc.strerror or exc}",
            hint="choose another --output-path",
        ) from exc
    if not folder.is_dir():
        raise ConfigError(f"the output folder {folder} is not a folder", hint="choose another --output-path")
    try:
        return os.open(lock_path(folder), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            what = (
                "is on a read-only file system" if exc.errno == errno.EROFS else f"is not writable ({reason})"
            )
            raise ConfigError(
                f"the output folder {folder} {what}: a run writes its store and files there",
                hint="choose another --output-path, or make it writable",
            ) from exc
        raise ConfigError(
            f"cannot create {lock_path(folder)}: {reason}", hint="choose another --output-path"
        ) from exc


def check_not_written(folder: Path) -> None:
    """Refuse to read a run folder that another process is writing now (its answers are incomplete)."""
    key = _key(folder)
    if key in _held:
        return
    try:
        fd = os.open(lock_path(folder), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return  # no lock file (a run of an older version, or never run): nobody writes it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(
                f"{folder} is being written by {_holder(fd)} right now: its answers are incomplete",
                hint="wait for it to finish (or stop it), then run this command again",
            ) from None
        except OSError:
            return
        with suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
