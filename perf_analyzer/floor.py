"""The platform's floor: the served ensemble with every stage replaced by a no-op.

    python -m perf_analyzer.floor --repository model_repository --out /tmp/floor

Copies the repository's ensemble and the config of every model it steps through (names,
versions, inputs, outputs, dynamic batching, instance groups, queue policy: unchanged) and
installs `floor_model.py` as each stage's model.py. The copy passes the same tensors
through the same number of Python-backend stages as the real chain, so perf_analyzer
against it measures what Triton, the ensemble scheduler and the Python backend's IPC cost
per request before any stage computes. `perf_analyzer.report` serves it in the same run as
the real ensemble and sets the ensemble's latency against floor + in-process compute.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from recsys.contract import ENSEMBLE_NAME

FLOOR_MODEL = Path(__file__).with_name("floor_model.py")
FLOOR_FILE = "floor.json"


@dataclass(frozen=True)
class FloorRepository:
    path: Path
    stages: tuple[str, ...]  # composing models, in ensemble step order


def read_config(model_dir: Path) -> mc.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


def ensemble_steps(repository: Path) -> list[tuple[str, int]]:
    """(model, version) of every step of the ensemble, in order."""
    config = read_config(repository / ENSEMBLE_NAME)
    if config.platform != "ensemble":
        raise ValueError(f"{repository / ENSEMBLE_NAME} is not an ensemble (platform "
                         f"{config.platform!r})")  # fmt: skip
    return [(step.model_name, int(step.model_version))
            for step in config.ensemble_scheduling.step]  # fmt: skip


def write_floor_repository(source: Path, out: Path, variable_dim: int) -> FloorRepository:
    """A no-op twin of `source` at `out` (replaced if present). `variable_dim` is the size a
    -1 output dimension takes (the load's top_k for item_ids and scores)."""
    if out.exists():
        shutil.rmtree(out)
    steps = ensemble_steps(source)
    versions = {model: version for model, version in steps}
    pinned = list(read_config(source / ENSEMBLE_NAME).version_policy.specific.versions)
    ensemble_versions = pinned or [max(versions.values())]
    for model, versions_of in ((ENSEMBLE_NAME, ensemble_versions),
                               *((m, [v]) for m, v in versions.items())):  # fmt: skip
        (out / model).mkdir(parents=True)
        config = read_config(source / model)
        if model != ENSEMBLE_NAME:  # a stage served by another backend becomes Python too
            config.backend, config.platform, config.default_model_filename = "python", "", ""
        (out / model / "config.pbtxt").write_text(text_format.MessageToString(config))
        for version in versions_of:
            version_dir = out / model / str(version)
            version_dir.mkdir()
            if model != ENSEMBLE_NAME:
                shutil.copy2(FLOOR_MODEL, version_dir / "model.py")
                (version_dir / FLOOR_FILE).write_text(json.dumps({"variable_dim": variable_dim}))
    return FloorRepository(out, tuple(versions))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variable-dim", type=int, default=10, help="top_k of the load")
    args = parser.parse_args(argv)
    floor = write_floor_repository(args.repository, args.out, args.variable_dim)
    print(f"floor repository {floor.path}: no-op {', '.join(floor.stages)} behind "
          f"{ENSEMBLE_NAME}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
