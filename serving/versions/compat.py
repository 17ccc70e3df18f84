"""Do the parts of a version fit together: its files, workflows, towers, index, catalog.

Offline, without a server: each part is loaded with the library that serves it, and a
candidate's tensors are compared with the serving version's (both must load side by side
under one config per model).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.contract import (
    CATALOG_FILE,
    ITEM_INDEX_FILE,
    QUERY_TOWER_FILE,
    RANKING_MODEL_FILE,
    STAGE_MODEL_NAMES,
    USER_TABLE_FILE,
    USER_WORKFLOW_DIR,
    FeatureSpec,
)
from recsys.settings import ServingSettings
from serving.manifest import refused, sha256_file, verify_files
from serving.repository import (
    StageInterface,
    version_interfaces,
    version_schema,
    version_specs,
)

EMBEDDING_TABLE = re.compile(r"embeddings\.tables\.(\d+)\.weight$")


def _table_rows(module: Any) -> list[int]:
    rows = {}
    for name, parameter in module.named_parameters():
        if match := EMBEDDING_TABLE.search(name):
            rows[int(match.group(1))] = int(parameter.shape[0])
    return [rows[index] for index in sorted(rows)]


def _probe(spec: FeatureSpec, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Features at the largest index each column may take: out-of-range fails loudly."""
    import torch  # heavy, and needed only by the checks: `list` and --help stay fast

    largest = [
        c - 1 for c, w in zip(spec.cardinalities, spec.widths, strict=True) for _ in range(w)
    ]
    categorical = torch.tensor(largest, dtype=torch.int64)
    categorical = categorical.expand(*shape, len(largest)).contiguous()
    continuous = torch.zeros(*shape, len(spec.continuous), dtype=torch.float32)
    return categorical, continuous


def _tables_match(what: str, module: Any, cardinalities: list[int]) -> list[str]:
    rows = _table_rows(module)
    if rows == cardinalities:
        return []
    return [
        f"{what} has embedding tables of {rows} rows but the version's workflows produce "
        f"cardinalities {cardinalities}: it was trained on a different workflow"
    ]


def _user_problems(version_dir: Path, user_spec: FeatureSpec, expected: list[str]) -> list[str]:
    import nvtabular as nvt  # heavy, and needed only by the checks

    from workflows.fitted import spec_from_workflow

    problems = []
    try:
        workflow = nvt.Workflow.load(str(version_dir / USER_WORKFLOW_DIR))
        produced = spec_from_workflow(workflow)
        if produced != user_spec:
            problems.append(
                f"the user workflow's output schema {produced.describe()} differs from the "
                f"feature spec shipped with it {user_spec.describe()}"
            )
    except Exception as exc:  # a corrupt file can raise nearly anything: report, go on
        problems.append(f"the user workflow does not load: {exc}")
    try:
        users = pd.read_parquet(version_dir / USER_TABLE_FILE)
        missing = set(expected) - set(users.columns)
        if missing:
            problems.append(f"{USER_TABLE_FILE} lacks columns {sorted(missing)}")
    except Exception as exc:
        problems.append(f"{USER_TABLE_FILE} does not load: {exc}")
    return problems


def _query_tower_problems(
    version_dir: Path, user_spec: FeatureSpec
) -> tuple[int | None, list[str]]:
    """(the query vectors' dimension, problems)."""
    import torch

    try:
        tower = torch.jit.load(str(version_dir / QUERY_TOWER_FILE), map_location="cpu")
        problems = _tables_match("the query tower", tower, list(user_spec.cardinalities))
        with torch.inference_mode():
            return int(tower(*_probe(user_spec, (2,))).shape[-1]), problems
    except Exception as exc:
        return None, [f"the query tower does not take the user workflow's output: {exc}"]


def _catalog_problems(
    repository: Path, version: int, item_spec: FeatureSpec
) -> tuple[int | None, list[str]]:
    """(the catalog's item count, problems); retrieval and reorder carry one catalog (the
    ranking model carries its features, checked by _ranking_problems)."""
    first, *others = (
        repository / name / str(version) / CATALOG_FILE for name in ("retrieval", "reorder")
    )
    try:
        same = all(sha256_file(first) == sha256_file(other) for other in others)
        with np.load(first) as catalog:
            categorical, continuous = catalog["categorical"], catalog["continuous"]
            rows = len(catalog["item_ids"])
    except Exception as exc:
        return None, [f"the catalog does not load: {exc}"]
    problems = [] if same else ["retrieval and reorder carry different catalogs"]
    widths = (categorical.shape[1:], continuous.shape[1:])
    if widths != ((item_spec.categorical_width,), (len(item_spec.continuous),)):
        problems.append(
            f"the catalog's feature widths {widths} do not match the item spec "
            f"{item_spec.describe()}"
        )
    elif rows and (categorical.max(axis=0) >= np.repeat(item_spec.cardinalities,
                                                         item_spec.widths)).any():  # fmt: skip
        problems.append("the catalog holds item feature indices beyond the item spec")
    return rows, problems


def _index_problems(
    version_dir: Path, items: int | None, query_dim: int | None, candidates: int
) -> list[str]:
    import faiss

    try:
        index = faiss.read_index(str(version_dir / ITEM_INDEX_FILE))
    except Exception as exc:
        return [f"the item index does not load: {exc}"]
    problems = []
    if items is not None and index.ntotal != items:
        problems.append(f"the index holds {index.ntotal} items, the catalog {items}")
    if query_dim is not None and index.d != query_dim:
        problems.append(f"the index has dimension {index.d}, the query tower {query_dim}")
    if index.ntotal < candidates:
        problems.append(f"{index.ntotal} items cannot fill {candidates} candidates")
    return problems


def _ranking_problems(
    version_dir: Path, user_spec: FeatureSpec, item_spec: FeatureSpec, items: int | None
) -> list[str]:
    import torch

    try:
        ranker = torch.jit.load(str(version_dir / RANKING_MODEL_FILE), map_location="cpu")
        cardinalities = [*user_spec.cardinalities, *item_spec.cardinalities]
        problems = _tables_match("the DLRM", ranker, cardinalities)
        catalog_rows = int(ranker.item_categorical.shape[0])
        if items is not None and catalog_rows != items:
            problems.append(f"the ranking model carries {catalog_rows} items, the catalog {items}")
        candidates = torch.tensor([[0, catalog_rows - 1, -1]] * 2, dtype=torch.int64)
        with torch.inference_mode():
            scores = ranker(*_probe(user_spec, (2,)), candidates)
    except Exception as exc:
        return [f"the DLRM does not take the workflows' output: {exc}"]
    if tuple(scores.shape) != (2, 3):
        problems.append(f"the DLRM answers shape {tuple(scores.shape)} for 2 users x 3 items")
    return problems


def schema_problems(repository: Path, version: int, serving: ServingSettings) -> list[str]:
    """Everything that does not fit together in version `version`; empty if all fits.

    The workflows' output (FeatureSpec) must be what the query tower, the index, the
    catalog and the DLRM were built for: same columns, same cardinalities. Every part is
    loaded with the library that serves it.
    """
    try:
        user_spec, item_spec = version_specs(repository, version)
        schema = version_schema(repository, version)
    except (OSError, ValueError, KeyError) as exc:
        return [f"the feature schema or specs cannot be read: {exc}"]

    def version_dir(name: str) -> Path:
        return repository / name / str(version)

    expected_columns = [schema.users.id, *schema.users.features]
    problems = _user_problems(version_dir("user_features"), user_spec, expected_columns)
    query_dim, found = _query_tower_problems(version_dir("retrieval"), user_spec)
    problems += found
    items, found = _catalog_problems(repository, version, item_spec)
    problems += found
    problems += _index_problems(version_dir("retrieval"), items, query_dim, serving.num_candidates)
    problems += _ranking_problems(version_dir("ranking"), user_spec, item_spec, items)
    return problems


def check_version(repository: Path, version: int, serving: ServingSettings) -> dict[str, Any]:
    """Files exactly as published and parts that fit together; returns the manifest."""
    manifest = verify_files(repository, version)
    problems = schema_problems(repository, version, serving)
    if problems:
        raise refused(version, "its parts do not fit together", problems)
    return manifest


def side_by_side_problems(
    repository: Path, serving_version: int, candidate: int, serving: ServingSettings
) -> list[str]:
    """Both versions load under one config per model: their tensors must be the same."""
    current = version_interfaces(repository, serving_version, serving)
    new = version_interfaces(repository, candidate, serving)
    return [
        f"{name}: {_tensors_text(current[name])} would become {_tensors_text(new[name])}"
        for name in STAGE_MODEL_NAMES
        if current[name] != new[name]
    ]


def _tensors_text(interface: StageInterface) -> str:
    tensors = (*interface.inputs, *interface.outputs)
    return ", ".join(f"{t.name}{list(t.dims)}" for t in tensors)
