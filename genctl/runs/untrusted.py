"""Reading what genctl did not just write (an export's config, a run folder's ``.hydra`` files) as hostile.

A folder handed over may hold anything under the expected names, and each of these stalls or
exhausts a reader that trusts it:

- a link to ``/dev/zero`` (or any endless device) is read until memory runs out, and opening a
  FIFO blocks until someone writes to it: only regular files are read, opened without blocking,
  and at most :data:`MAX_BYTES` of them;
- a YAML alias bomb (a kilobyte of anchors, each list repeating the previous one ten times) is
  parsed by ``yaml.safe_load`` in milliseconds into shared references, which OmegaConf then
  copies out one by one, for ever: YAML that uses an alias is refused (genctl never writes one);
- the same sharing in a pickled checkpoint's config, and nesting deep enough to exhaust the
  stack: :func:`check_config` walks any loaded config once, and refuses both, before OmegaConf
  sees it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from genctl.errors import GenctlError

MAX_BYTES = 1 << 20  # a genctl config is a few kilobytes
MAX_DEPTH = 32  # genctl's configs nest 4 levels deep
MAX_NODES = 100_000  # entries of all the dicts and lists of one config together


class UntrustedFileError(GenctlError):
    """A file, or a config loaded from one, refused before it is built into a config; ``str()`` is
    the reason alone (the caller names the file and says what to do)."""


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with aliases refused where the composer meets them: nothing is
    built from a document that uses one, however many anchors it stacks."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            line = event.start_mark.line + 1
            raise UntrustedFileError(f"it uses the YAML alias *{event.anchor} (line {line}), which genctl never writes")
        return super().compose_node(parent, index)


def read_bytes(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The contents of ``path`` when it is a regular file of at most ``limit`` bytes.

    It is opened without blocking (a FIFO would wait for a writer) and checked on the open file
    (a link is followed once, to what it names now); at most ``limit + 1`` bytes are read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise UntrustedFileError(e.strerror or str(e)) from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UntrustedFileError(f"it is {_kind(mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise UntrustedFileError(e.strerror or str(e)) from e
    finally:
        os.close(fd)
    if size > limit:
        raise UntrustedFileError(f"it is larger than {limit:,} bytes")
    return b"".join(chunks)


def load_yaml(path: Path, limit: int = MAX_BYTES) -> Any:
    """The YAML document in ``path``, read by :func:`read_bytes`, parsed without aliases, and
    checked by :func:`check_config`; every refusal is an :class:`UntrustedFileError`."""
    data = read_bytes(path, limit)
    try:
        loaded = yaml.load(data.decode("utf-8"), Loader=_NoAliasLoader)  # a SafeLoader: plain data only
    except UnicodeDecodeError as e:
        raise UntrustedFileError("it is not UTF-8 text") from e
    except yaml.YAMLError as e:
        raise UntrustedFileError(" ".join(str(e).split())[:200]) from e
    except RecursionError as e:
        raise UntrustedFileError("it nests too deeply to be a config") from e
    check_config(loaded)
    return loaded


def check_config(data: Any) -> None:
    """Refuse a loaded config that OmegaConf could not build in bounded time: a dict or list that
    appears twice (a YAML alias or a pickled reference: OmegaConf copies every appearance),
    nesting beyond :data:`MAX_DEPTH`, or more than :data:`MAX_NODES` entries. One pass, no recursion."""
    seen: set[int] = set()
    pending: list[tuple[Any, int]] = [(data, 0)]
    nodes = 0
    while pending:
        node, depth = pending.pop()
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in seen:
            raise UntrustedFileError("a part of its config appears twice (a shared reference), which genctl never writes")
        if depth > MAX_DEPTH:
            raise UntrustedFileError(f"its config nests more than {MAX_DEPTH} levels deep")
        seen.add(id(node))
        children = node.values() if isinstance(node, dict) else node
        nodes += len(node)
        if nodes > MAX_NODES:
            raise UntrustedFileError(f"its config holds more than {MAX_NODES:,} entries")
        pending.extend((child, depth + 1) for child in children)


def _kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device", stat.S_ISFIFO: "a FIFO"}
    return next((name for test, name in kinds.items() if test(mode)), "a socket or special file")
