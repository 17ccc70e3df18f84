"""merlin-systems as the measured peer: the same pipeline, built and exported the way a
Merlin user would, served by the same tritonserver and driven by the same perf_analyzer.

    python -m perf_analyzer.merlin_peer --artifacts artifacts --out results/merlin_peer
    python -m perf_analyzer.merlin_peer --artifacts artifacts --out results/merlin_peer \
        --measure --concurrency 1,4

The graph follows Merlin's multi-stage example (NVIDIA-Merlin/Merlin,
examples/Building-and-deploying-multi-stage-RecSys), with merlin-systems 23.08's own
operators wherever one exists:

    user_id -> UserFeatureLookup* -> TransformWorkflow(saved user workflow)
            -> UserFeatureTensors* -> PredictPyTorch(query tower) -> QueryFaiss(same index)
            -> ItemFeatureLookup* -> UnrollFeatures(user tensors over the candidates)
            -> PredictPyTorch(DLRM) -> SoftmaxSampling (or TopKByScore*, a plain sort)

`*` marks the small adapters written here; each docstring says why merlin-systems needs
it. `Ensemble(...).export(dir)` writes merlin-systems' executor repository: one
`executor_model` (Python backend, the graph runs inside it) that calls the workflow and
both PyTorch models as separate Triton models through BLS, exactly as on an NGC image.

One deviation is forced by this platform: `PredictPyTorch` exports its models for the
`pytorch_libtorch` backend, which the bundled server does not ship (only `python`). The
exported config is rewritten to the Python backend and served by `LibtorchStandIn`, which
does what the libtorch backend does for these models (torch.jit.load, inputs matched to
forward()'s argument names, one output). The BLS hop, the model files and the tensors stay
as merlin-systems exported them.

What the peer does not do, compared with the project's `recommender`: no per-request
top_k, exclusions or feature overrides and no seen-item filter (merlin-systems has no
operator for them), and no dynamic batching (the executor is exported without it). Its
load therefore carries less work per request than the project's.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from merlin.dag import BaseOperator, ColumnSelector, DataFormats
from merlin.schema import ColumnSchema, Schema
from merlin.table import TensorTable

from perf_analyzer.sweep import SweepResult, held_out_users, run_sweep
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
    Catalog,
    FeatureSpec,
    History,
    read_schema,
    row_of_id,
)
from recsys.settings import PROJECT_ROOT, ServerSettings, Settings, load_settings

EXECUTOR_MODEL = "executor_model"
# The names merlin-systems' graph gives the tensors between operators (ours, not Merlin's:
# PredictPyTorch takes whatever the schemas say).
USER_CATEGORICAL, USER_CONTINUOUS = "user_categorical", "user_continuous"
ITEM_CATEGORICAL, ITEM_CONTINUOUS = "item_categorical", "item_continuous"
USER_HISTORY = "user_history"
QUERY, CLICK, CANDIDATE_ITEM_ID = "query", "click", "item_id"
# SoftmaxSampling's output names (merlin/systems/dag/ops/softmax_sampling.py).
ORDERED_IDS, ORDERED_SCORES = "ordered_ids", "ordered_scores"
# Merlin's multi-stage example samples with this temperature.
SOFTMAX_TEMPERATURE = 20.0
STAND_IN_MODEL_PY = (
    '"""Serves a model merlin-systems exported for `pytorch_libtorch` on the Python backend\n'
    '(see perf_analyzer/merlin_peer.py: LibtorchStandIn)."""\n\n'
    "from perf_analyzer.merlin_peer import LibtorchStandIn as TritonPythonModel  # noqa: F401\n"
)


def _merlin() -> Any:
    """merlin-systems' modules, imported on first use: they take seconds to import and the
    report imports this module whether or not it measures the peer."""
    import merlin.systems.dag.ops.faiss as faiss_ops
    import merlin.systems.dag.ops.pytorch as pytorch_ops
    import merlin.systems.dag.ops.softmax_sampling as softmax_ops
    import merlin.systems.dag.ops.unroll_features as unroll_ops
    import merlin.systems.dag.ops.workflow as workflow_ops

    return (workflow_ops, pytorch_ops, faiss_ops, unroll_ops, softmax_ops)


# ---------------------------------------------------------------- adapter operators
#
# Defined at module level (not inside a function) so that cloudpickle stores them by
# reference: the executor model imports this module (PYTHONPATH holds the project root)
# instead of carrying a copy of their code in ensemble.pkl.


class UserFeatureLookup(BaseOperator):
    """user_id -> the raw user row the saved workflow expects.

    Why: Merlin's example reads user features with `QueryFeast`, which needs a Feast
    feature store; the project ships the user table with the model set instead. This is
    the in-memory stand-in (one vectorised binary search, as the project's own stage does).

    Nulls: Triton's BYTES tensors cannot carry a null, and the TransformWorkflow model
    receives its input over BLS as Triton tensors, so a missing string feature is sent as
    "" (Categorify maps it to the out-of-vocabulary index, where the project's stage maps it
    to the null index). Unknown users get that same all-missing row. Multi-hot user features
    would need `__values/__offsets` pairs and are refused.
    """

    def __init__(self, users_path: Path, input_schema: Schema, id_column: str) -> None:
        super().__init__()
        self.users_path = str(users_path)
        self.workflow_input = input_schema
        self.id_column = id_column
        self._ids: np.ndarray | None = None
        self._columns: dict[str, np.ndarray] = {}
        for name, column in input_schema.column_schemas.items():
            if column.is_list:
                raise NotImplementedError(
                    f"user feature {name!r} is a list: the peer sends only scalar features"
                )
        self._load(Path(self.users_path))

    def _load(self, path: Path) -> None:
        users = pd.read_parquet(path).sort_values(self.id_column, kind="stable")
        self._ids = users[self.id_column].to_numpy(np.int64)
        self._columns = {}
        for name, column in self.workflow_input.column_schemas.items():
            if name == self.id_column:
                continue
            values = users[name]
            if column.dtype.element_type.value == "object" or values.dtype == object:
                # Row len(ids) is the missing row unknown users get.
                filled = values.astype(object).where(values.notna(), "").astype(str)
                self._columns[name] = np.append(filled.to_numpy(object), np.array([""], object))
            else:
                dtype = np.dtype(column.dtype.to_numpy)
                self._columns[name] = np.append(values.to_numpy(dtype), np.array([np.nan], dtype))

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_ids", "_columns")}

    def save_artifacts(self, artifact_path: str) -> None:
        shutil.copy2(self.users_path, Path(artifact_path) / USER_TABLE_FILE)

    def load_artifacts(self, artifact_path: str) -> None:
        self._load(Path(artifact_path) / USER_TABLE_FILE if artifact_path else self.users_path)

    def compute_output_schema(
        self,
        input_schema: Schema,
        col_selector: ColumnSelector,
        prev_output_schema: Schema | None = None,
    ) -> Schema:
        return self.workflow_input

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        assert self._ids is not None, "load_artifacts was not called"
        user_ids = np.asarray(transformable[REQUEST_USER_ID].values, np.int64).reshape(-1)
        rows = row_of_id(self._ids, user_ids)
        columns = {name: values[rows] for name, values in self._columns.items()}
        columns[self.id_column] = user_ids
        return TensorTable({name: columns[name] for name in self.workflow_input.column_names})

    @property
    def supported_formats(self) -> DataFormats:
        return DataFormats.NUMPY_TENSOR_TABLE


class UserHistoryLookup(BaseOperator):
    """user_id -> the query tower's history input: the user's latest stored interactions
    (history.npz, shipped with the model set) as `recsys.contract.history_matrix` lays
    them out for the project's retrieval stage.

    Why: the project's query tower pools each user's recent items; merlin-systems has no
    operator for per-user history (Merlin's example reads it from Feast like any feature).
    Added to the graph only when the query tower's forward() takes `user_history`.
    """

    def __init__(self, history_path: Path, length: int) -> None:
        super().__init__()
        self.history_path = str(history_path)
        self.length = length
        self._history: History | None = History.load(history_path)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_history"}

    def save_artifacts(self, artifact_path: str) -> None:
        shutil.copy2(self.history_path, Path(artifact_path) / HISTORY_FILE)

    def load_artifacts(self, artifact_path: str) -> None:
        path = Path(artifact_path) / HISTORY_FILE if artifact_path else Path(self.history_path)
        self._history = History.load(path)

    def compute_output_schema(
        self,
        input_schema: Schema,
        col_selector: ColumnSelector,
        prev_output_schema: Schema | None = None,
    ) -> Schema:
        return Schema([ColumnSchema(USER_HISTORY, dtype=np.int64, dims=(None, self.length))])

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        # Imported here: the function arrived with the history-pooling query tower, and
        # model sets without it never build this operator.
        from recsys.contract import history_matrix

        assert self._history is not None, "load_artifacts was not called"
        user_ids = np.asarray(transformable[REQUEST_USER_ID].values, np.int64).reshape(-1)
        return TensorTable({USER_HISTORY: history_matrix(self._history, user_ids, self.length)})

    @property
    def supported_formats(self) -> DataFormats:
        return DataFormats.NUMPY_TENSOR_TABLE


class UserFeatureTensors(BaseOperator):
    """The workflow's output columns -> the two matrices the models were trained on.

    Why: the project's TorchScript models take (user_categorical [B, W], user_continuous
    [B, n]) as two tensors, while `TransformWorkflow` outputs one column per feature and
    `PredictPyTorch` passes columns through unchanged. Stacking them here keeps the saved
    models as trained (the same files the project serves).
    """

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.spec = spec

    def compute_output_schema(
        self,
        input_schema: Schema,
        col_selector: ColumnSelector,
        prev_output_schema: Schema | None = None,
    ) -> Schema:
        return Schema(
            [
                ColumnSchema(USER_CATEGORICAL, dtype=np.int64,
                             dims=(None, self.spec.categorical_width)),
                ColumnSchema(USER_CONTINUOUS, dtype=np.float32,
                             dims=(None, len(self.spec.continuous))),
            ]
        )  # fmt: skip

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        parts = [
            np.asarray(transformable[name].values, np.int64).reshape(-1, width)
            for name, width in zip(self.spec.categorical, self.spec.widths, strict=True)
        ]
        continuous = [
            np.asarray(transformable[name].values, np.float32).reshape(-1, 1)
            for name in self.spec.continuous
        ]
        rows = len(parts[0]) if parts else len(continuous[0])
        return TensorTable(
            {
                USER_CATEGORICAL: np.hstack(parts) if parts else np.zeros((rows, 0), np.int64),
                USER_CONTINUOUS: (
                    np.hstack(continuous) if continuous else np.zeros((rows, 0), np.float32)
                ),
            }
        )

    @property
    def supported_formats(self) -> DataFormats:
        return DataFormats.NUMPY_TENSOR_TABLE


class ItemFeatureLookup(BaseOperator):
    """QueryFaiss's candidate_ids (catalog rows) -> raw item ids and item feature tensors.

    Why: Merlin's example fetches item features with `QueryFeast`; the project precomputes
    the item workflow's output for the whole catalog (catalog.npz), so this is an array
    lookup, one row per candidate as Merlin's graphs have it.
    """

    def __init__(self, catalog_path: Path) -> None:
        super().__init__()
        self.catalog_path = str(catalog_path)
        self._catalog: Catalog | None = Catalog.load(catalog_path)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_catalog"}

    def save_artifacts(self, artifact_path: str) -> None:
        shutil.copy2(self.catalog_path, Path(artifact_path) / CATALOG_FILE)

    def load_artifacts(self, artifact_path: str) -> None:
        path = Path(artifact_path) / CATALOG_FILE if artifact_path else Path(self.catalog_path)
        self._catalog = Catalog.load(path)

    def compute_output_schema(
        self,
        input_schema: Schema,
        col_selector: ColumnSelector,
        prev_output_schema: Schema | None = None,
    ) -> Schema:
        assert self._catalog is not None
        return Schema(
            [
                ColumnSchema(CANDIDATE_ITEM_ID, dtype=np.int64, dims=(None,)),
                ColumnSchema(ITEM_CATEGORICAL, dtype=np.int64,
                             dims=(None, self._catalog.categorical.shape[1])),
                ColumnSchema(ITEM_CONTINUOUS, dtype=np.float32,
                             dims=(None, self._catalog.continuous.shape[1])),
            ]
        )  # fmt: skip

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        assert self._catalog is not None, "load_artifacts was not called"
        rows = np.asarray(transformable["candidate_ids"].values, np.int64).reshape(-1)
        # faiss pads with -1 when the index holds fewer items than asked for.
        rows = rows[rows >= 0]
        return TensorTable(
            {
                CANDIDATE_ITEM_ID: self._catalog.item_ids[rows].astype(np.int64),
                ITEM_CATEGORICAL: self._catalog.categorical[rows].astype(np.int64),
                ITEM_CONTINUOUS: self._catalog.continuous[rows].astype(np.float32),
            }
        )

    @property
    def supported_formats(self) -> DataFormats:
        return DataFormats.NUMPY_TENSOR_TABLE


class TopKByScore(BaseOperator):
    """Candidates sorted by score, best first, cut to top_k: the deterministic ordering.

    Why: merlin-systems 23.08's only ordering operator is `SoftmaxSampling`, which samples
    (and weighs by exp(T·s)/sum(s), not a softmax); a plain sort is what the project serves
    without `temperature`, and it makes the peer's answer comparable item for item. Same
    inputs and outputs as SoftmaxSampling (parent: ids; dependency: relevance column).
    """

    def __init__(self, relevance_col: Any, topk: int) -> None:
        from merlin.dag.node import Node

        self.relevance_col = Node.construct_from(relevance_col)
        self.topk = topk
        self._input_col_name: str | None = None
        self._relevance_col_name: str | None = None
        super().__init__()

    @property
    def dependencies(self) -> Any:
        return self.relevance_col

    def compute_input_schema(
        self,
        root_schema: Schema,
        parents_schema: Schema,
        deps_schema: Schema,
        selector: ColumnSelector,
    ) -> Schema:
        input_schema = super().compute_input_schema(
            root_schema, parents_schema, deps_schema, selector
        )
        self._input_col_name = parents_schema.column_names[0]
        self._relevance_col_name = deps_schema.column_names[0]
        return input_schema

    def compute_output_schema(
        self,
        input_schema: Schema,
        col_selector: ColumnSelector,
        prev_output_schema: Schema | None = None,
    ) -> Schema:
        return Schema(
            [
                ColumnSchema(ORDERED_IDS, dtype=input_schema[self._input_col_name].dtype,
                             dims=(None, 1)),
                ColumnSchema(ORDERED_SCORES,
                             dtype=input_schema[self._relevance_col_name].dtype, dims=(None, 1)),
            ]
        )  # fmt: skip

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        ids = transformable[self._input_col_name].values.reshape(-1)
        scores = transformable[self._relevance_col_name].values.reshape(-1)
        order = np.argsort(-scores, kind="stable")[: self.topk]
        return type(transformable)(
            {ORDERED_IDS: ids[order].reshape(1, -1), ORDERED_SCORES: scores[order].reshape(1, -1)}
        )


class PerRowRanking(torch.nn.Module):
    """The project's ranking model in Merlin's row layout: one (user, candidate) pair per
    row, [N, W] inputs -> [N, 1] click probability.

    Why: the project's TorchScript scorer takes item tensors with a candidate axis
    ([B, C, W]). Merlin's graph has one row per candidate after `UnrollFeatures`, so
    [N, 1, W] would do, but merlin-core 23.08 cannot describe a 3-D column to Triton:
    `ColumnSchema.with_properties` (called by `PredictPyTorch.__init__` on every input)
    rebuilds the shape from `value_count`, which keeps one inner dimension, so dims
    (None, 1, W) are exported as [-1, 1] and the BLS request's shape is refused. This
    wrapper adds the candidate axis inside TorchScript; the scorer's weights are unchanged.
    """

    def __init__(self, scorer: torch.nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(
        self,
        user_categorical: torch.Tensor,
        user_continuous: torch.Tensor,
        item_categorical: torch.Tensor,
        item_continuous: torch.Tensor,
    ) -> torch.Tensor:
        return self.scorer(
            user_categorical, user_continuous,
            item_categorical.unsqueeze(1), item_continuous.unsqueeze(1),
        )  # fmt: skip


# ---------------------------------------------------------------- the libtorch stand-in


class LibtorchStandIn:
    """A Python-backend model doing what Triton's `pytorch_libtorch` backend does for the
    models `PredictPyTorch` exports: load `model.pt` with torch.jit.load, pass each input
    tensor to forward() by argument name, return the result as the config's one output.

    Why: the server bundled here ships only the Python backend, and merlin-systems 23.08's
    `PredictPyTorchTriton._export_torchscript_config` always writes
    `platform: "pytorch_libtorch"` (merlin/systems/dag/runtimes/triton/ops/pytorch.py), so
    the exported model cannot load as is. merlin-systems' own Python-backend PyTorch model
    (merlin/systems/triton/models/pytorch_model.py) is not an option: it is the
    Transformers4Rec path (pickled module + state dict, dict in/dict out) and moves every
    input to the GPU with `.cuda()`.
    """

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        threads = config.get("parameters", {}).get("torch_threads", {}).get("string_value")
        if threads:
            torch.set_num_threads(int(threads))
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.model = torch.jit.load(str(version_dir / "model.pt")).eval()
        self.inputs = [i["name"] for i in config["input"]]
        self.output = config["output"][0]["name"]
        arguments = self.model.forward.schema.arguments[1:]
        required = {a.name for a in arguments if not a.has_default_value()}
        known = {a.name for a in arguments}
        if not required <= set(self.inputs) <= known:
            raise ValueError(
                f"model.pt forward{tuple(a.name for a in arguments)} does not take the "
                f"config's inputs {self.inputs}"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            tensors = {
                name: torch.from_numpy(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
                for name in self.inputs
            }
            with torch.inference_mode():
                result = self.model(**tensors)
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor(self.output, result.numpy())])
            )
        return responses


def serve_libtorch_models_on_python(repository: Path, torch_threads: int) -> list[str]:
    """Point every `pytorch_libtorch` model of an exported repository at LibtorchStandIn;
    returns the models changed."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    changed = []
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        if config.platform != "pytorch_libtorch":
            continue
        config.platform = ""
        config.backend = "python"
        # A libtorch-only setting; the Python backend would ignore it.
        del config.parameters["INFERENCE_MODE"]
        config.parameters["torch_threads"].string_value = str(torch_threads)
        config_path.write_text(text_format.MessageToString(config))
        for version_dir in config_path.parent.iterdir():
            if version_dir.is_dir() and (version_dir / "model.pt").exists():
                (version_dir / "model.py").write_text(STAND_IN_MODEL_PY)
        changed.append(config.name)
    return changed


# ---------------------------------------------------------------- build and export


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


def build_ensemble(
    artifacts: Path,
    num_candidates: int,
    top_k: int,
    ordering: str = "softmax",
) -> Any:
    """The merlin-systems `Ensemble` of the pipeline (not exported yet)."""
    import nvtabular as nvt
    from merlin.systems.dag.ensemble import Ensemble

    workflow_ops, pytorch_ops, faiss_ops, unroll_ops, softmax_ops = _merlin()
    paths = PeerArtifacts(artifacts)
    schema = read_schema(artifacts / SCHEMA_FILE)
    workflow = nvt.Workflow.load(str(paths.user_workflow))
    spec = FeatureSpec.from_json((paths.user_workflow / FEATURE_SPEC_FILE).read_text())
    catalog = Catalog.load(paths.models / CATALOG_FILE)
    query_tower = torch.jit.load(str(paths.models / QUERY_TOWER_FILE))
    ranking_model = torch.jit.script(
        PerRowRanking(torch.jit.load(str(paths.models / RANKING_FILE))).eval()
    )
    with torch.inference_mode():
        dim = query_tower(
            torch.zeros((1, spec.categorical_width), dtype=torch.int64),
            torch.zeros((1, len(spec.continuous)), dtype=torch.float32),
        ).shape[1]

    user_tensors_schema = UserFeatureTensors(spec).compute_output_schema(
        Schema([]), ColumnSelector([])
    )
    item_schema = ItemFeatureLookup(paths.models / CATALOG_FILE).compute_output_schema(
        Schema([]), ColumnSelector([])
    )
    ranking_inputs = Schema(
        [user_tensors_schema[USER_CATEGORICAL], user_tensors_schema[USER_CONTINUOUS],
         item_schema[ITEM_CATEGORICAL], item_schema[ITEM_CONTINUOUS]]
    )  # fmt: skip

    raw = [REQUEST_USER_ID] >> UserFeatureLookup(
        paths.models / USER_TABLE_FILE, workflow.input_schema, schema.users.id
    )
    user = raw >> workflow_ops.TransformWorkflow(workflow) >> UserFeatureTensors(spec)
    query_inputs = user
    query_schema = [user_tensors_schema[USER_CATEGORICAL], user_tensors_schema[USER_CONTINUOUS]]
    if USER_HISTORY in [a.name for a in query_tower.forward.schema.arguments]:
        history = UserHistoryLookup(paths.models / HISTORY_FILE, int(query_tower.history_length))
        query_inputs = user + ([REQUEST_USER_ID] >> history)
        history_schema = history.compute_output_schema(Schema([]), ColumnSelector([]))
        query_schema.append(history_schema[USER_HISTORY])
    query = query_inputs >> pytorch_ops.PredictPyTorch(
        query_tower,
        Schema(query_schema),
        Schema([ColumnSchema(QUERY, dtype=np.float32, dims=(None, dim))]),
    )
    candidates = query >> faiss_ops.QueryFaiss(
        paths.models / ITEM_INDEX_FILE, topk=min(num_candidates, len(catalog.item_ids))
    )
    combined = (
        candidates
        >> ItemFeatureLookup(paths.models / CATALOG_FILE)
        >> unroll_ops.UnrollFeatures(CANDIDATE_ITEM_ID, user[[USER_CATEGORICAL, USER_CONTINUOUS]])
    )
    ranking = combined >> pytorch_ops.PredictPyTorch(
        ranking_model,
        ranking_inputs,
        Schema([ColumnSchema(CLICK, dtype=np.float32, dims=(None, 1))]),
    )
    if ordering == "softmax":
        ordered = combined[CANDIDATE_ITEM_ID] >> softmax_ops.SoftmaxSampling(
            relevance_col=ranking[CLICK], topk=top_k, temperature=SOFTMAX_TEMPERATURE
        )
    elif ordering == "sort":
        ordered = combined[CANDIDATE_ITEM_ID] >> TopKByScore(ranking[CLICK], top_k)
    else:
        raise ValueError(f"ordering must be 'softmax' or 'sort', not {ordering!r}")
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
    ensemble = build_ensemble(
        artifacts, settings.serving.num_candidates, settings.serving.default_top_k, ordering
    )
    ensemble.export(str(out))
    serve_libtorch_models_on_python(out, settings.serving.torch_threads)
    return out


# ---------------------------------------------------------------- measure


def peer_input_data(artifacts: Path, count: int = 200) -> dict[str, list[dict[str, object]]]:
    """perf_analyzer `--input-data` for the executor: the same held-out users the project's
    sweep sends (sweep.held_out_users), each as its only input. The executor is exported
    without `max_batch_size`, so the shape includes the batch dimension of 1."""
    held_out = held_out_users(artifacts, count)
    return {
        "data": [
            {REQUEST_USER_ID: {"content": [int(user_id)], "shape": [1]}}
            for user_id in held_out.user_ids
        ]
    }


def peer_server_settings(server: ServerSettings) -> ServerSettings:
    """The exported repository has no `recommender`: load whatever it holds."""
    return server.model_copy(update={"model_control_mode": "none"})


def run_merlin_peer_sweep(
    url: str,
    protocol: str,
    input_data: Path,
    out_csv: Path,
    concurrency: tuple[int, ...],
    measurement_interval_ms: int,
    stability_percentage: int = 25,
) -> SweepResult:
    """sweep.run_sweep against a running peer: rows as the project's sweep writes them
    (`Concurrency`, `Inferences/Second`, `p50 latency`, `p99 latency` in µs, ...)."""
    return run_sweep(
        url, protocol, input_data, out_csv, concurrency, measurement_interval_ms,
        model=EXECUTOR_MODEL, stability_percentage=stability_percentage,
    )  # fmt: skip


def measure_merlin_peer(
    artifacts: Path,
    out: Path,
    settings: Settings,
    concurrency: tuple[int, ...],
    measurement_interval_ms: int = 2000,
    protocol: str = "grpc",
    stability_percentage: int = 60,
    repository: Path | None = None,
) -> SweepResult:
    """Export the peer (unless `repository` is given), serve it on `settings.server`'s ports
    (nothing else may hold them) and sweep it; writes under `out`."""
    from serving.launcher import TritonServer

    out.mkdir(parents=True, exist_ok=True)
    if repository is None:
        repository = export_merlin_peer(artifacts, out / "model_repository", settings)
    input_path = out / "merlin_peer_input.json"
    input_path.write_text(json.dumps(peer_input_data(artifacts)))
    server = TritonServer(
        repository, peer_server_settings(settings.server), out / "merlin_peer_tritonserver.log"
    )
    with server:
        url = server.grpc_url if protocol == "grpc" else server.http_url
        return run_merlin_peer_sweep(
            url, protocol, input_path, out / f"merlin_peer_{protocol}.csv", concurrency,
            measurement_interval_ms, stability_percentage,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "artifacts")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "merlin_peer")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--ordering", choices=("softmax", "sort"), default="softmax")
    parser.add_argument("--measure", action="store_true", help="serve it and run perf_analyzer")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated levels")
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--ports", default=None,
        help="HTTP,GRPC,METRICS for the peer's server (default: the configuration's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    if args.ports:
        http, grpc, metrics = (int(port) for port in args.ports.split(","))
        server = settings.server.model_copy(
            update={"http_port": http, "grpc_port": grpc, "metrics_port": metrics}
        )
        settings = settings.model_copy(update={"server": server})
    repository = export_merlin_peer(
        args.artifacts, args.out / "model_repository", settings, args.ordering
    )
    print(f"merlin-systems executor repository: {repository}")
    if not args.measure:
        return 0
    levels = tuple(int(level) for level in args.concurrency.split(","))
    result = measure_merlin_peer(
        args.artifacts, args.out, settings, levels, args.interval_ms, args.protocol,
        repository=repository,
    )  # fmt: skip
    for row in result.rows:
        print(
            f"concurrency {row['Concurrency']:>3}: {float(row['Inferences/Second']):8.1f} infer/s"
            f"  p50 {int(row['p50 latency']) / 1000:7.1f} ms"
            f"  p99 {int(row['p99 latency']) / 1000:7.1f} ms"
        )
    print(f"CSV: {result.csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
