"""Generate the Triton model repository from trained artefacts.

Layout (one numbered version directory per model; a model set version N has every stage
at version N and the ensemble pins its steps to N):

    model_repository/
      user_features/  config.pbtxt  N/{model.py, user_workflow/, users.parquet}
      retrieval/      config.pbtxt  N/{model.py, query_tower.pt, item_index.faiss}
      item_features/  config.pbtxt  N/{model.py, catalog.npz}
      ranking/        config.pbtxt  N/{model.py, model.pt}
      reorder/        config.pbtxt  N/{model.py, catalog.npz}
      recommender/    config.pbtxt  N/            (platform: "ensemble")

Configs are built as `ModelConfig` protobuf messages (Triton's own schema) and written in
text format, so a misspelt field fails here rather than at server start.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from recsys.settings import ENSEMBLE_NAME, STAGE_MODEL_NAMES, ServingSettings
from serving.stages import RANKING_MODEL_FILE
from training.train import (
    CATALOG_FILE,
    ITEM_INDEX_FILE,
    QUERY_TOWER_FILE,
    RANKING_FILE,
    USER_TABLE_FILE,
)
from workflows.features import FEATURE_SPEC_FILE, ITEM_WORKFLOW_DIR, USER_WORKFLOW_DIR, FeatureSpec

TRITON_MODELS_DIR = Path(__file__).resolve().parent / "triton_models"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton type name without the TYPE_ prefix: INT64, FP32, BYTES, INT32
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class StageInterface:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


def stage_interfaces(
    user_spec: FeatureSpec, item_spec: FeatureSpec, serving: ServingSettings
) -> dict[str, StageInterface]:
    """Every stage's tensors; shapes exclude the batch dimension."""
    c = serving.num_candidates
    user_cat = Tensor("user_categorical", "INT64", (len(user_spec.categorical),))
    user_cont = Tensor("user_continuous", "FP32", (len(user_spec.continuous),))
    rows = Tensor("candidate_rows", "INT64", (c,))
    item_cat = Tensor("item_categorical", "INT64", (c, len(item_spec.categorical)))
    item_cont = Tensor("item_continuous", "FP32", (c, len(item_spec.continuous)))
    ranking_scores = Tensor("ranking_scores", "FP32", (c,))
    return {
        "user_features": StageInterface(
            inputs=(
                Tensor("user_id", "INT64", (1,)),
                Tensor("age", "FP32", (1,), optional=True),
                Tensor("country", "BYTES", (1,), optional=True),
                Tensor("device", "BYTES", (1,), optional=True),
                Tensor("zipcode", "BYTES", (1,), optional=True),
            ),
            outputs=(user_cat, user_cont),
        ),
        "retrieval": StageInterface(
            inputs=(user_cat, user_cont),
            outputs=(rows, Tensor("retrieval_scores", "FP32", (c,))),
        ),
        "item_features": StageInterface(inputs=(rows,), outputs=(item_cat, item_cont)),
        "ranking": StageInterface(
            inputs=(user_cat, user_cont, item_cat, item_cont), outputs=(ranking_scores,)
        ),
        "reorder": StageInterface(
            inputs=(
                rows,
                ranking_scores,
                Tensor("top_k", "INT32", (1,)),
                Tensor("exclude_item_ids", "INT64", (-1,), optional=True),
                Tensor("temperature", "FP32", (1,), optional=True),
            ),
            outputs=(
                Tensor("item_ids", "INT64", (-1,)),
                Tensor("scores", "FP32", (-1,)),
                Tensor("model_version", "INT64", (1,)),
            ),
        ),
    }


def ensemble_interface(interfaces: dict[str, StageInterface]) -> StageInterface:
    """The ensemble's own inputs (what callers send) and outputs (what they get back)."""
    produced = {t.name for s in interfaces.values() for t in s.outputs}
    inputs: dict[str, Tensor] = {}
    for stage in interfaces.values():
        for tensor in stage.inputs:
            if tensor.name not in produced:
                inputs.setdefault(tensor.name, tensor)
    return StageInterface(inputs=tuple(inputs.values()), outputs=interfaces["reorder"].outputs)


def _add_tensors(target, tensors: tuple[Tensor, ...], optional_field: bool) -> None:  # type: ignore[no-untyped-def]
    for tensor in tensors:
        entry = target.add()
        entry.name = tensor.name
        # Triton's config calls the BYTES wire type TYPE_STRING.
        config_type = "STRING" if tensor.dtype == "BYTES" else tensor.dtype
        entry.data_type = mc.DataType.Value(f"TYPE_{config_type}")
        entry.dims.extend(tensor.dims)
        if optional_field and tensor.optional:
            entry.optional = True


def _set_parameters(config: mc.ModelConfig, parameters: dict[str, str]) -> None:
    for key, value in parameters.items():
        config.parameters[key].string_value = value


def build_stage_config(
    name: str, interface: StageInterface, serving: ServingSettings, backend: str = "python"
) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, max_batch_size=serving.max_batch_size)
    if backend == "pytorch_libtorch":
        config.platform = "pytorch_libtorch"
        config.default_model_filename = RANKING_MODEL_FILE
    else:
        config.backend = "python"
    _add_tensors(config.input, interface.inputs, optional_field=True)
    _add_tensors(config.output, interface.outputs, optional_field=False)
    config.dynamic_batching.max_queue_delay_microseconds = serving.max_queue_delay_microseconds
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.Kind.Value(serving.instance_kind)
    group.count = serving.instance_count
    _set_parameters(
        config,
        {
            "num_candidates": str(serving.num_candidates),
            "max_top_k": str(serving.max_top_k),
            "max_exclude": str(serving.max_exclude),
            "torch_threads": str(serving.torch_threads),
        },
    )
    return config


def build_ensemble_config(
    interfaces: dict[str, StageInterface], serving: ServingSettings, version: int
) -> mc.ModelConfig:
    """`platform: "ensemble"` chaining the stages; every step pinned to model set `version`."""
    ensemble = ensemble_interface(interfaces)
    config = mc.ModelConfig(
        name=ENSEMBLE_NAME, platform="ensemble", max_batch_size=serving.max_batch_size
    )
    # Triton rejects ensembles with dangling tensors: map only outputs someone consumes.
    consumed = {t.name for s in interfaces.values() for t in s.inputs}
    consumed |= {t.name for t in ensemble.outputs}
    _add_tensors(config.input, ensemble.inputs, optional_field=True)
    _add_tensors(config.output, ensemble.outputs, optional_field=False)
    for stage_name in STAGE_MODEL_NAMES:
        stage = interfaces[stage_name]
        step = config.ensemble_scheduling.step.add()
        step.model_name = stage_name
        step.model_version = version
        # Ensemble tensor names equal the stage tensor names: one name per tensor end to end.
        for tensor in stage.inputs:
            step.input_map[tensor.name] = tensor.name
        for tensor in stage.outputs:
            if tensor.name in consumed:
                step.output_map[tensor.name] = tensor.name
    return config


def write_config(config: mc.ModelConfig, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return path


def _copy(source: Path, destination: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copy2(source, destination)


def stage_files(artifacts_dir: Path) -> dict[str, dict[str, Path]]:
    """Artefacts each stage version needs: destination name -> source path."""
    models, workflows = artifacts_dir / "models", artifacts_dir / "workflows"
    return {
        "user_features": {
            USER_WORKFLOW_DIR: workflows / USER_WORKFLOW_DIR,
            USER_TABLE_FILE: models / USER_TABLE_FILE,
        },
        "retrieval": {
            QUERY_TOWER_FILE: models / QUERY_TOWER_FILE,
            ITEM_INDEX_FILE: models / ITEM_INDEX_FILE,
        },
        "item_features": {CATALOG_FILE: models / CATALOG_FILE},
        "ranking": {RANKING_MODEL_FILE: models / RANKING_FILE},
        "reorder": {CATALOG_FILE: models / CATALOG_FILE},
    }


def load_specs(artifacts_dir: Path) -> tuple[FeatureSpec, FeatureSpec]:
    workflows = artifacts_dir / "workflows"
    return (
        FeatureSpec.from_json((workflows / USER_WORKFLOW_DIR / FEATURE_SPEC_FILE).read_text()),
        FeatureSpec.from_json((workflows / ITEM_WORKFLOW_DIR / FEATURE_SPEC_FILE).read_text()),
    )


def build_model_repository(
    artifacts_dir: Path, repository: Path, serving: ServingSettings, version: int = 1
) -> list[Path]:
    """Write model set `version` into `repository` (configs regenerated); return model dirs."""
    if version < 1:
        raise ValueError(f"model versions start at 1, got {version}")
    user_spec, item_spec = load_specs(artifacts_dir)
    interfaces = stage_interfaces(user_spec, item_spec, serving)
    files = stage_files(artifacts_dir)
    model_dirs = []
    for name in STAGE_MODEL_NAMES:
        model_dir = repository / name
        version_dir = model_dir / str(version)
        if version_dir.exists():
            shutil.rmtree(version_dir)
        version_dir.mkdir(parents=True)
        for destination, source in files[name].items():
            if not source.exists():
                raise FileNotFoundError(f"artefact {source} for model {name!r} is missing")
            _copy(source, version_dir / destination)
        backend = serving.ranking_backend if name == "ranking" else "python"
        if backend == "python":
            shutil.copy2(TRITON_MODELS_DIR / f"{name}.py", version_dir / "model.py")
        write_config(build_stage_config(name, interfaces[name], serving, backend), model_dir)
        model_dirs.append(model_dir)
    ensemble_dir = repository / ENSEMBLE_NAME
    (ensemble_dir / str(version)).mkdir(parents=True, exist_ok=True)
    write_config(build_ensemble_config(interfaces, serving, version), ensemble_dir)
    model_dirs.append(ensemble_dir)
    return model_dirs
