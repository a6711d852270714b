"""Reading a file someone else names (an operator's setting, a layout from another party) without trusting it.

A path may name a FIFO, a device or a file that grows without end: opening a FIFO for reading waits for a
writer, and reading `/dev/zero` never ends. `read_regular` opens without waiting, refuses anything but a
regular file and reads at most one byte past its limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from scitt_oci.errors import UnreadableFile

__all__ = ["UnreadableFile", "read_regular"]


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them.

    Raises `FileNotFoundError` when there is no such file, `UnreadableFile` when it is not a regular file,
    is larger than `limit` or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile("not a regular file")
        if info.st_size > limit:
            raise UnreadableFile(f"more than {limit} bytes")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise UnreadableFile(exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise UnreadableFile(f"more than {limit} bytes")
    return data
