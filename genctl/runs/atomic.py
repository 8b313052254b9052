"""The one way genctl writes a file: never half a file, never through a planted link.

A crash, a kill or a full disk never leaves half a file (:func:`atomic_write`: a temp file, then a
rename), and a reader never sees one. A run or export folder is data that may come from someone
else, or sit where others can write: a symbolic link planted at ``RUN/samples.png`` or
``RUN/samples/`` would make a writer that follows it overwrite whatever it points to. So every
file genctl writes goes through this module, which refuses a link at the file, or at any folder
between the run/export/output folder and the file (:func:`refuse_links`), and appends and
truncates without following one (``O_NOFOLLOW``). A folder that cannot take a file (read-only, a
file in its place, a name the system refuses) is said in one line, before the work whose result
it would hold (:func:`check_writable`), and a write that fails anyway is one line too.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from genctl.errors import GenctlError

LONGEST_SHOWN = 500  # characters of a path an error line shows; the rest is elided
# Folders nested deeper than this are refused: pathlib (Hydra's too) creates missing folders by
# recursion, which Python's stack limit ends in a traceback near a thousand levels.
DEEPEST = 256


def shown(path: Path | str) -> str:
    """``path`` as an error line shows it: a path of thousands of characters is elided in the middle."""
    text = str(path)
    if len(text) <= LONGEST_SHOWN:
        return text
    half = LONGEST_SHOWN // 2
    return f"{text[:half]}...{text[-half:]} ({len(text)} characters)"


def link_refusal(path: Path) -> str:
    """The one line that refuses to write through the link at ``path``."""
    return f"{shown(path)} is a symbolic link: genctl never writes through a link; remove it (rm {shown(path)}) and run again"


def refuse_links(path: Path, root: Path | None = None) -> None:
    """Refuse ``path`` where it, or a folder between ``root`` (default: its parent) and it, is a symbolic link.

    ``root`` itself may be a link (the folder a person named); what lies inside it is checked, so a
    planted ``RUN/samples -> /elsewhere`` receives nothing. Names that do not exist yet are fine.
    """
    root = path.parent if root is None else root
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        root, parts = path.parent, (path.name,)
    current = root
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise GenctlError(f"cannot write {shown(path)}: {e.strerror}") from None
        if stat.S_ISLNK(mode):
            raise GenctlError(link_refusal(current))


def unwritable(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (made where missing), or None where one can.

    Asked of the folder's nearest existing ancestor, without writing anything; ``os.access``
    answers for a read-only file system even as root, where permission bits do not stop writes.
    """
    if len(folder.parts) > DEEPEST:
        return f"it is {len(folder.parts)} folders deep, and genctl writes at most {DEEPEST} deep"
    probe = folder
    while True:
        try:
            mode = os.stat(probe).st_mode
            break
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                return f"{shown(probe)} does not exist"
            probe = probe.parent
        except OSError as e:  # a name too long, a loop of links
            return e.strerror.lower() if e.strerror else type(e).__name__
    if not stat.S_ISDIR(mode):
        return f"{shown(probe)} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return f"{shown(probe)} is on a read-only file system"
        return f"{shown(probe)} is not writable"
    return None


def check_writable(path: Path, what: str, fix: str, root: Path | None = None) -> None:
    """Refuse, before the work that makes it, a file that could not be written: a link on its way
    (:func:`refuse_links`), or a folder that cannot take it (:func:`unwritable`); ``fix`` says what to do."""
    refuse_links(path, root)
    why = unwritable(path.parent)
    if why:
        raise GenctlError(f"cannot write {what} {shown(path)}: {why}; {fix}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], what: str, root: Path | None = None) -> None:
    """Write ``path`` with ``write`` via a temp file in the same folder, fsync, then rename.

    A crash at any moment leaves either the old file or the new one, never a partial one, and a
    reader never sees half of it. A link at ``path`` or on its way from ``root`` (default: its
    folder) is refused rather than replaced or followed. A write that fails (a full disk, a
    read-only folder) is one line naming ``what`` was being written and what was kept.
    """
    refuse_links(path, root)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make run folders unreadable to others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        error = _os_error(e) if isinstance(e, Exception) else None  # Ctrl-C stays an interruption
        if error is None:
            raise
        kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written before"
        full = _disk_full(error)
        fix = "free some space and run it again" if full else "make the folder writable or write elsewhere"
        raise GenctlError(f"cannot write {what} {shown(path)}: {full or error.strerror or error}; {kept}; {fix}") from e


def write_text(path: Path, text: str, what: str, root: Path | None = None) -> None:
    """:func:`atomic_write` of ``text`` (UTF-8): tables, summaries, Markdown."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data), what, root)


def open_append(path: Path, what: str, root: Path | None = None) -> int:
    """A descriptor that appends to ``path`` (created where missing) and never follows a link there:
    ``O_NOFOLLOW`` refuses one planted after :func:`refuse_links` looked."""
    refuse_links(path, root)
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise GenctlError(link_refusal(path)) from None
        raise GenctlError(f"cannot write {what} {shown(path)}: {e.strerror}; make the folder writable or write elsewhere") from e


def append_text(path: Path, text: str, what: str, root: Path | None = None) -> None:
    """Append ``text`` to ``path`` (:func:`open_append`): lines such as ``history.jsonl``'s, one write each."""
    with os.fdopen(open_append(path, what, root), "a", encoding="utf-8") as f:
        f.write(text)


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes without following a link there."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


class LockHeld(Exception):
    """Another process holds the lock file; ``holder`` is what it wrote there (its PID)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold the lock file ``path`` (created without following a link) while the block runs; raise
    :class:`LockHeld` where another process holds it.

    ``fcntl.flock`` rather than a file's mere existence: the system releases the lock of a process
    that dies, even by SIGKILL, so a lock file left behind is no obstacle. The file goes when the
    block ends; a process that opened it just before must find the name still naming the file it
    locked, or try again, so two processes never each hold a lock on a different file.
    """
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise GenctlError(link_refusal(path)) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LockHeld(holder) from None
        if _same_file(fd, path):
            break
        os.close(fd)
    else:
        raise LockHeld("")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        Path(path).unlink(missing_ok=True)  # while still locked: a process that opened it retries
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed or replaced meanwhile)."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _umask() -> int:
    """The process's umask (reading it means setting it; put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _os_error(e: BaseException) -> OSError | None:
    """The OSError in the chain of ``e``, if any: torch's writer reports a failed write as a
    RuntimeError, with the OSError that caused it as its context."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _disk_full(e: OSError) -> str | None:
    """ "the disk is full" (or its quota) where that is what ``e`` says."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full" if e.errno == errno.ENOSPC else "the disk quota is exceeded"
    return None
