"""Writes that survive a power cut: temporary file, fsync, rename, fsync of the directory.

A rename alone is atomic for readers but not durable: after a power cut the new name can
point at a file whose data never reached the disk (zero bytes), or the rename itself can be
lost. Every file a server or the versions commands must trust after a crash (versions.json,
model configs, manifests, a published version's files) goes through here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a rename, a new or removed file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: str | bytes, halfway: Callable[[], None] | None = None) -> None:
    """Replace `path` with `data` atomically and durably; on any error `path` is unchanged
    and no temporary file is left. `halfway` runs between the two halves of the data, where
    a full disk or a kill would stop a real write (the versions commands' fault points)."""
    payload = data.encode() if isinstance(data, str) else data
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as handle:
            handle.write(payload[: len(payload) // 2])
            if halfway is not None:
                halfway()
            handle.write(payload[len(payload) // 2 :])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` (files copied without fsync), and
    `root`'s entry in its parent."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(Path(directory) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(Path(directory))
    fsync_directory(root.parent)
