"""Files a server or the versions commands trust after a crash are written durably: data
fsynced before the rename, the directory fsynced after it, nothing half-written left.

A power cut cannot be simulated here, so the test watches the real writes' fsync calls
(os.fsync wrapped, still called) and names the file each one flushed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from recsys.durable_files import write_durably
from serving.manifest import write_json
from serving.repository import read_config, write_config


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Paths whose file descriptor was fsynced, in order."""
    flushed: list[Path] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        flushed.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return flushed


def config_writer(directory: Path) -> Path:
    config = mc.ModelConfig(name="ranking", backend="python", max_batch_size=8)
    path = write_config(config, directory / "ranking")
    assert read_config(directory / "ranking").max_batch_size == 8
    return path


def manifest_writer(directory: Path) -> Path:
    path = directory / "manifest-1.json"
    write_json(path, {"version": 1})
    assert path.read_text() == '{\n  "version": 1\n}\n'
    return path


@pytest.mark.parametrize("write", [config_writer, manifest_writer], ids=["config", "manifest"])
def test_configs_and_manifests_reach_the_disk_before_they_are_trusted(
    tmp_path: Path, fsynced: list[Path], write: Callable[[Path], Path]
) -> None:
    path = write(tmp_path)
    # The data under its temporary name first, then the directory holding the rename.
    assert len(fsynced) == 2, fsynced
    assert fsynced[0].parent == path.parent and fsynced[0].name.endswith(".partial")
    assert fsynced[1] == path.parent
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_write_stopped_half_way_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "versions.json"
    write_durably(path, "old")

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_durably(path, "a much longer new content", halfway=disk_full)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["versions.json"]
