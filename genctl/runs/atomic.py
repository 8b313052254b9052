"""Writing a run folder's files so that a crash, a kill or a full disk never leaves half a file."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from genctl.errors import GenctlError


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], what: str) -> None:
    """Write ``path`` with ``write`` via a temp file in the same folder, fsync, then rename.

    A crash at any moment leaves either the old file or the new one, never a partial one, and a
    reader never sees half of it. A full disk is one line naming ``what`` was being written and
    saying that the previous file is intact.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make run folders unreadable to others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = _disk_full(e)
        if full:
            kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written before"
            raise GenctlError(f"cannot write {what} {path}: {full}; {kept}; free some space and run it again") from e
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it; put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _disk_full(e: BaseException) -> str | None:
    """ "the disk is full" (or its quota) when that is what the chain of ``e`` holds: torch's writer
    reports a failed write as a RuntimeError, with the OSError that caused it as its context."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return "the disk is full" if seen.errno == errno.ENOSPC else "the disk quota is exceeded"
        seen = seen.__cause__ or seen.__context__
    return None
