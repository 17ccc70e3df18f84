"""Writes that survive a power cut: temporary file, fsync, rename, fsync of the directory.

A rename alone is atomic for readers but not durable: after a power cut the new name can
point at a file whose data never reached the disk (zero bytes), or the rename itself can be
lost. Every file the versions commands must be able to trust after a crash (versions.json,
model configs, a published version's files) goes through here.
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from serving.versions.faults import fault_point

Fault = tuple[str, str]  # (command, step) of faults.STEPS


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a rename, a new or removed file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: str | bytes, fault: Fault | None = None) -> None:
    """Replace `path` with `data` atomically and durably; on any error `path` is unchanged
    and no temporary file is left. `fault` names the step this write injects faults at
    (between two halves of the data, where a full disk would stop it)."""
    payload = data.encode() if isinstance(data, str) else data
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as handle:
            handle.write(payload[: len(payload) // 2])
            if fault is not None:
                fault_point(*fault, path=path)
            handle.write(payload[len(payload) // 2 :])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_config_durably(config: mc.ModelConfig, model_dir: Path) -> Path:
    """config.pbtxt, as serving.repository.write_config writes it, but flushed to disk:
    after a power cut a server must restart on the config the history says serves."""
    path = model_dir / "config.pbtxt"
    write_durably(path, text_format.MessageToString(config))
    return path


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
