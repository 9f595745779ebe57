"""The one writer discipline: every file or directory lmforge writes appears whole or not at all.

A write stages beside its destination, in a hidden container `.NAME.lmforge-PID-XXXXXXXX/` that holds
a `writer.lock` (flock'ed by the writer for as long as it lives) and the new `NAME`. When the block
finishes, the new files are fsync'ed and swapped in with one rename (a directory that already exists
is exchanged with `renameat2(RENAME_EXCHANGE)`; where the file system lacks it, two renames with the
old one kept in the container until the new one is in). Commits into one directory take turns (a
flock on the directory), so two writers to one destination each land whole, the later one winning.
Several files that belong together (tokenizer.json + tokenizer_config.json) are staged together and
renamed after a journal; writes into a directory that is itself being staged go straight in.

A process killed mid-write (SIGKILL, power loss) leaves its container behind. The next write into the
same directory removes every container whose lock nobody holds, never one a live writer owns; a swap
or a journaled commit killed between its renames is first rolled back or finished.

Final files and directories get the permissions the user's umask gives (the container is 0700, its
content is not). OS errors (full disk, quota, denied, read-only, a file in the way) become one-line
`LMForgeError`s that name the destination and, where known, the size the write needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lmforge.errors import LMForgeError, os_error_line

TAG = ".lmforge-"
LOCK = "writer.lock"
PREVIOUS = "previous"  # where a two-rename swap keeps the old destination until the new one is in
JOURNAL = "committing"  # a multi-file write past this point is rolled forward, not back
_STAGING = re.compile(r"^\.(?P<name>.+)\.lmforge-(?P<pid>\d+)-[a-z0-9_]{8}$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - not a glibc/musl system
        return None


_LIBC = _libc()


# --- locks ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """Serialise stale cleanup and commits within one directory (across threads and processes)."""
    fd = os.open(parent, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without flock: commits still rename atomically
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _owned(container: Path) -> bool:
    """True while a live writer owns `container` (holds its lock, or, before the lock file exists,
    is a running process of this machine with the pid in the name)."""
    try:
        fd = os.open(container / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        match = _STAGING.match(container.name)
        if match is None:
            return False
        pid = int(match["pid"])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except OSError:
        return True  # unreadable: not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a live writer (or no flock here: keep it, to be safe)
        return True
    finally:
        os.close(fd)
    return False


def staging_dirs(parent: str | os.PathLike) -> list[Path]:
    """Every staging container lmforge left in `parent` (live or stale)."""
    parent = Path(parent)
    try:
        return sorted(p for p in parent.iterdir() if _STAGING.match(p.name))
    except OSError:
        return []


def clean_stale(parent: str | os.PathLike) -> list[Path]:
    """Remove the staging containers in `parent` left by dead writers, rolling back a swap a writer
    was killed in the middle of; returns what was removed. Call with the parent lock held."""
    removed = []
    for container in staging_dirs(parent):
        if _owned(container):
            continue
        destination = container.parent / _STAGING.match(container.name)["name"]
        previous = container / PREVIOUS
        if previous.exists() and not os.path.lexists(destination):
            os.replace(previous, destination)  # the swap died between its two renames
        if (container / JOURNAL).exists():  # a multi-file commit died between its renames: finish it
            for name in (container / JOURNAL).read_text().splitlines():
                if (container / name).exists():
                    os.replace(container / name, container.parent / name)
        shutil.rmtree(container, ignore_errors=True)
        removed.append(container)
    return removed


# --- durability ----------------------------------------------------------------------------------


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # some file systems cannot fsync a dir
            raise
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_symlink() or not path.exists():
        return
    if path.is_file():
        _fsync_path(path)
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _fsync_path(Path(root, name))
        _fsync_path(Path(root), directory=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system or file system cannot."""
    if _LIBC is None or not hasattr(_LIBC, "renameat2"):
        return False
    rc = _LIBC.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


# --- errors --------------------------------------------------------------------------------------

_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)|\[Errno (\d+)\]")


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _mb(n: int) -> str:
    if n >= 1e7:
        return f"{n / 1e6:,.0f} MB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:,.0f} kB"


def _as_os_error(exc: BaseException, parent: Path) -> OSError | None:
    """The OSError behind an exception: itself, one a library wrapped in its message ("os error 28"),
    or ENOSPC where a writer failed without an errno while the file system is full."""
    if isinstance(exc, OSError):
        return exc
    if not isinstance(exc, Exception) or isinstance(exc, LMForgeError):
        return None
    match = _OS_ERROR_IN_TEXT.search(str(exc))
    if match:
        code = int(match.group(1) or match.group(2))
        return OSError(code, os.strerror(code))
    free = _free_bytes(parent)
    if free is not None and free < 1 << 20:  # e.g. torch.save's "file write failed" on a full disk
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def _error(exc: OSError, destination: Path, staged: Path | None, expected_bytes: int | None) -> LMForgeError:
    """One line naming the destination file (mapped back from the staging copy) and the cause."""
    shown: Path | str = destination
    if exc.filename is not None:
        name = Path(os.fsdecode(exc.filename))
        if staged is not None and (name == staged or staged in name.parents):
            shown = destination / name.relative_to(staged) if name != staged else destination
        elif not _STAGING.match(name.name) and name.parent != destination.parent:
            shown = name
    detail = []
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        if expected_bytes:
            detail.append(f"needs ~{_mb(expected_bytes)}")
        free = _free_bytes(destination.parent)
        if free is not None:
            detail.append(f"{_mb(free)} free")
    return LMForgeError(os_error_line(exc, shown, "writing", ", ".join(detail)))


# --- staging -------------------------------------------------------------------------------------


def _prepare_parent(path: Path, directory: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a parent component is a file
        raise LMForgeError(
            f"cannot write {path}: {exc.filename or path.parent} is a file, not a directory; choose another path"
        ) from None
    except OSError as exc:
        raise _error(exc, path, None, None) from None
    if directory and path.exists() and not path.is_dir():
        raise LMForgeError(
            f"cannot write directory {path}: a file is there; remove it or choose another path"
        )
    if not directory and path.is_dir():
        raise LMForgeError(
            f"cannot write file {path}: a directory is there; remove it or choose another path"
        )


def _inside_staging(path: Path) -> bool:
    return any(_STAGING.match(p.name) for p in path.absolute().parents)


def _open_container(parent: Path, name: str) -> tuple[Path, int]:
    """Remove dead writers' staging in `parent`, then make ours, locked by this process."""
    with _parent_lock(parent):
        clean_stale(parent)
    container = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}{TAG}{os.getpid()}-"))
    # the lock file appears under its name already locked: a cleaner never sees it unlocked while we live
    lock_fd = os.open(container / f"{LOCK}.new", os.O_WRONLY | os.O_CREAT, 0o600)
    with contextlib.suppress(OSError):  # no flock on this file system: staging is then never judged stale
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
    os.write(lock_fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    os.rename(container / f"{LOCK}.new", container / LOCK)
    return container, lock_fd


@contextlib.contextmanager
def _staging(
    path: str | os.PathLike, directory: bool, suffix: str = "", expected_bytes: int | None = None
) -> Iterator[Path]:
    """Yield the staging path for `path`; commit it when the block finishes, clean up if it fails."""
    path = Path(path)
    _prepare_parent(path, directory)
    parent = path.parent
    if _inside_staging(path):  # part of a write already staged (a tokenizer inside a checkpoint)
        if directory:
            path.mkdir(exist_ok=True)
        yield path
        return
    lock_fd = None
    container = staged = None
    try:
        container, lock_fd = _open_container(parent, path.name)
        staged = container / (path.name if path.name.endswith(suffix) else path.name + suffix)
        if directory:
            os.mkdir(staged)  # 0777 & ~umask: a renamed mkdtemp would keep 0700
        yield staged
        _fsync_tree(staged)
        with _parent_lock(parent):
            if directory and path.is_dir() and not path.is_symlink():
                if not _exchange(staged, path):
                    os.replace(path, container / PREVIOUS)
                    os.replace(staged, path)
            else:
                os.replace(staged, path)
            _fsync_path(parent, directory=True)
    except BaseException as exc:
        cause = _as_os_error(exc, parent)
        if container is not None:
            shutil.rmtree(container, ignore_errors=True)
            container = None
        if cause is not None:
            raise _error(cause, path, staged, expected_bytes) from exc
        raise
    finally:
        if container is not None:
            shutil.rmtree(container, ignore_errors=True)  # the old destination, after a swap
        if lock_fd is not None:
            os.close(lock_fd)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a new, empty directory; when the block finishes it replaces `path` whole (an existing
    directory is swapped out). `expected_bytes` is quoted when the disk fills up."""
    with _staging(path, True, expected_bytes=expected_bytes) as staged:
        yield staged


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike, suffix: str = "", expected_bytes: int | None = None
) -> Iterator[Path]:
    """Yield a path (not yet created) beside `path`; it replaces `path` only if the block finishes.
    `suffix` ends the staging file's name, for writers that insist on an extension."""
    with _staging(path, False, suffix, expected_bytes) as staged:
        yield staged


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path, expected_bytes=len(data)) as staged:
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_files(directory: str | os.PathLike, files: dict[str, str | bytes]) -> Path:
    """Write several files into `directory` as one: all new or all old. They are staged together and a
    journal is written before the renames, so the next write finishes a commit killed half-way."""
    directory = Path(directory)
    data = {name: v.encode("utf-8") if isinstance(v, str) else v for name, v in files.items()}
    _prepare_parent(directory, True)
    if _inside_staging(directory / "x"):
        directory.mkdir(exist_ok=True)
        for name, payload in data.items():
            (directory / name).write_bytes(payload)
        return directory
    container = lock_fd = None
    created = False  # by this call: removed again if the write fails
    try:
        try:
            directory.mkdir()
            created = True
        except FileExistsError:  # there already, or made by a writer racing this one
            pass
        container, lock_fd = _open_container(directory, next(iter(data)))
        for name, payload in data.items():
            with os.fdopen(os.open(container / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
                f.write(payload)
        _fsync_tree(container)
        with open(container / JOURNAL, "w") as f:
            f.write("\n".join(data))
            f.flush()
            os.fsync(f.fileno())
        with _parent_lock(directory):
            for name in data:
                os.replace(container / name, directory / name)
            _fsync_path(directory, directory=True)
    except BaseException as exc:
        cause = _as_os_error(exc, directory)
        if container is not None:
            shutil.rmtree(container, ignore_errors=True)
            container = None
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        if cause is not None:
            raise _error(cause, directory, container, sum(map(len, data.values()))) from exc
        raise
    finally:
        if container is not None:
            shutil.rmtree(container, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)
    return directory
