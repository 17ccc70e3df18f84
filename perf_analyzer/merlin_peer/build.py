"""The pipeline built the way a Merlin user would with merlin-systems 23.08, and exported as
its executor repository.

The graph follows Merlin's multi-stage example (NVIDIA-Merlin/Merlin,
examples/Building-and-deploying-multi-stage-RecSys), with merlin-systems' own operators
wherever one exists:

    user_id -> UserFeatureLookup* -> TransformWorkflow(saved user workflow)
            -> UserFeatureTensors* -> PredictPyTorch(query tower) -> QueryFaiss(same index)
            -> ItemFeatureLookup* -> UnrollFeatures(user tensors over the candidates)
            -> PredictPyTorch(DLRM) -> SoftmaxSampling (or TopKByScore*, a plain sort)

`*` marks the adapters of operators.py. `Ensemble(...).export(dir)` writes merlin-systems'
executor repository: one `executor_model` (Python backend, the graph runs inside it) that
calls the workflow and both PyTorch models as separate Triton models through BLS, exactly as
on an NGC image, except that the PyTorch models run on libtorch_standin.py.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import nvtabular as nvt
import torch
from merlin.schema import ColumnSchema, Schema
from merlin.systems.dag.ensemble import Ensemble
from merlin.systems.dag.ops.faiss import QueryFaiss
from merlin.systems.dag.ops.pytorch import PredictPyTorch
from merlin.systems.dag.ops.softmax_sampling import SoftmaxSampling
from merlin.systems.dag.ops.unroll_features import UnrollFeatures
from merlin.systems.dag.ops.workflow import TransformWorkflow

from perf_analyzer.merlin_peer.libtorch_standin import serve_libtorch_models_on_python
from perf_analyzer.merlin_peer.operators import (
    CANDIDATE_ITEM_ID,
    CLICK,
    ITEM_CATEGORICAL,
    ITEM_CONTINUOUS,
    QUERY,
    USER_CATEGORICAL,
    USER_CONTINUOUS,
    USER_HISTORY,
    ItemFeatureLookup,
    PerRowRanking,
    TopKByScore,
    UserFeatureLookup,
    UserFeatureTensors,
    UserHistoryLookup,
)
from recsys.contract import (
    CATALOG_FILE,
    FEATURE_SPEC_FILE,
    HISTORY_FILE,
    ITEM_INDEX_FILE,
    QUERY_TOWER_FILE,
    RANKING_FILE,
    REQUEST_USER_ID,
    SCHEMA_FILE,
    USER_TABLE_FILE,
    USER_WORKFLOW_DIR,
    FeatureSpec,
    read_schema,
)
from recsys.settings import Settings

EXECUTOR_MODEL = "executor_model"
ORDERINGS = ("softmax", "sort")
# Merlin's multi-stage example samples with this temperature.
SOFTMAX_TEMPERATURE = 20.0


@dataclass(frozen=True)
class PeerArtifacts:
    """Where the peer reads the project's model set (layout: pipeline.build)."""

    root: Path

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def user_workflow(self) -> Path:
        return self.root / "workflows" / USER_WORKFLOW_DIR


def _query_dim(query_tower: torch.jit.ScriptModule, spec: FeatureSpec) -> int:
    """The query vector's width, which PredictPyTorch's output schema must state."""
    with torch.inference_mode():
        return int(
            query_tower(
                torch.zeros((1, spec.categorical_width), dtype=torch.int64),
                torch.zeros((1, len(spec.continuous)), dtype=torch.float32),
            ).shape[1]
        )


def build_ensemble(
    artifacts: Path,
    num_candidates: int,
    top_k: int,
    ordering: str = "softmax",
) -> Ensemble:
    """The merlin-systems `Ensemble` of the pipeline (not exported yet)."""
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, not {ordering!r}")
    paths = PeerArtifacts(artifacts)
    schema = read_schema(artifacts / SCHEMA_FILE)
    workflow = nvt.Workflow.load(str(paths.user_workflow))
    spec = FeatureSpec.from_json((paths.user_workflow / FEATURE_SPEC_FILE).read_text())
    query_tower = torch.jit.load(str(paths.models / QUERY_TOWER_FILE))
    ranking_model = torch.jit.script(
        PerRowRanking(torch.jit.load(str(paths.models / RANKING_FILE))).eval()
    )

    user_tensors = UserFeatureTensors(spec)
    items = ItemFeatureLookup(paths.models / CATALOG_FILE)
    user_schema, item_schema = user_tensors.output_schema(), items.output_schema()
    raw = [REQUEST_USER_ID] >> UserFeatureLookup(
        paths.models / USER_TABLE_FILE, workflow.input_schema, schema.users.id
    )
    user = raw >> TransformWorkflow(workflow) >> user_tensors
    query_inputs = user
    query_schema = [user_schema[USER_CATEGORICAL], user_schema[USER_CONTINUOUS]]
    if USER_HISTORY in [a.name for a in query_tower.forward.schema.arguments]:
        history = UserHistoryLookup(paths.models / HISTORY_FILE, int(query_tower.history_length))
        query_inputs = user + ([REQUEST_USER_ID] >> history)
        query_schema.append(history.output_schema()[USER_HISTORY])
    query = query_inputs >> PredictPyTorch(
        query_tower,
        Schema(query_schema),
        Schema([ColumnSchema(QUERY, dtype=np.float32, dims=(None, _query_dim(query_tower, spec)))]),
    )
    candidates = query >> QueryFaiss(
        paths.models / ITEM_INDEX_FILE, topk=min(num_candidates, len(items.loaded.item_ids))
    )
    combined = (
        candidates
        >> items
        >> UnrollFeatures(CANDIDATE_ITEM_ID, user[[USER_CATEGORICAL, USER_CONTINUOUS]])
    )
    ranking = combined >> PredictPyTorch(
        ranking_model,
        Schema([user_schema[USER_CATEGORICAL], user_schema[USER_CONTINUOUS],
                item_schema[ITEM_CATEGORICAL], item_schema[ITEM_CONTINUOUS]]),
        Schema([ColumnSchema(CLICK, dtype=np.float32, dims=(None, 1))]),
    )  # fmt: skip
    if ordering == "softmax":
        ordered = combined[CANDIDATE_ITEM_ID] >> SoftmaxSampling(
            relevance_col=ranking[CLICK], topk=top_k, temperature=SOFTMAX_TEMPERATURE
        )
    else:
        ordered = combined[CANDIDATE_ITEM_ID] >> TopKByScore(ranking[CLICK], top_k)
    request = Schema([ColumnSchema(REQUEST_USER_ID, dtype=np.int64, dims=(None,))])
    return Ensemble(ordered, request)


def export_merlin_peer(
    artifacts: Path, out: Path, settings: Settings, ordering: str = "softmax"
) -> Path:
    """Export the pipeline as merlin-systems' executor repository under `out`; returns the
    repository (served with `model_control_mode: none`: it has no `recommender`)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    serving = settings.serving
    ensemble = build_ensemble(artifacts, serving.num_candidates, serving.default_top_k, ordering)
    ensemble.export(str(out))
    serve_libtorch_models_on_python(out, serving.torch_threads)
    return out
