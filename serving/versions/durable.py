"""Durable writes of the versions commands, with their fault-injection points.

The writing itself is recsys.durable_files; this adds the step at which
RECSYS_FAULT=<command>:<step> kills the command or fills the disk half-way through a write.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from recsys import durable_files
from recsys.durable_files import fsync_directory, fsync_tree
from serving.versions.faults import fault_point

Fault = tuple[str, str]  # (command, step) of faults.STEPS

__all__ = ["Fault", "fsync_directory", "fsync_tree", "write_config_durably", "write_durably"]


def write_durably(path: Path, data: str | bytes, fault: Fault | None = None) -> None:
    """recsys.durable_files.write_durably, with `fault` naming the step it injects faults at."""
    halfway = None if fault is None else lambda: fault_point(*fault, path=path)
    durable_files.write_durably(path, data, halfway)


def write_config_durably(config: mc.ModelConfig, model_dir: Path) -> Path:
    """config.pbtxt, as serving.repository.write_config writes it, with the fault points of
    the versions commands: after a power cut a server must restart on the config the
    history says serves."""
    path = model_dir / "config.pbtxt"
    write_durably(path, text_format.MessageToString(config))
    return path
