"""A batch of known and unknown users through the live server at a version, checked.

Step 2 of a promotion (through every stage, each named with the candidate version) and the
check after its switch (through the ensemble).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tritonclient.utils import InferenceServerException

from recsys.contract import (
    CATALOG_FILE,
    ENSEMBLE_NAME,
    REQUEST_USER_ID,
    STAGE_MODEL_NAMES,
    USER_TABLE_FILE,
)
from recsys.settings import ServingSettings
from serving.manifest import VersionError, refused
from serving.repository import (
    StageInterface,
    ensemble_interface,
    version_interfaces,
    version_schema,
)
from serving.versions.admin import TritonAdmin


def _smoke_inputs(repository: Path, version: int, serving: ServingSettings) -> dict[str, Any]:
    id_column = version_schema(repository, version).users.id
    users = pd.read_parquet(repository / "user_features" / str(version) / USER_TABLE_FILE)
    known = users[id_column].head(3).tolist()
    ids = np.array([[u] for u in [*known, int(users[id_column].max()) + 1]], dtype=np.int64)
    top_k = min(serving.default_top_k, serving.max_top_k, serving.num_candidates)
    return {REQUEST_USER_ID: ids, "top_k": np.full((len(ids), 1), top_k, dtype=np.int32)}


def _answer_problems(
    answer: dict[str, np.ndarray], version: int, top_k: int, catalog_ids: np.ndarray
) -> list[str]:
    item_ids, scores = answer["item_ids"], answer["scores"]
    problems = []
    if set(answer["model_version"].reshape(-1).tolist()) != {version}:
        problems.append(f"model_version {answer['model_version'].reshape(-1).tolist()}")
    if item_ids.shape[1] != top_k or (item_ids < 0).any():
        problems.append(f"item_ids of shape {item_ids.shape} with padding, wanted {top_k} each")
    elif any(len(set(row.tolist())) != top_k for row in item_ids):
        problems.append("an answer repeats an item")
    if not np.isin(item_ids, catalog_ids).all():
        problems.append("item ids outside the version's catalog")
    # Scores are the ranking's P(like); the list is ordered by expected positives (with the
    # retrieval score), so they need not descend: only their range is checked.
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        problems.append("scores that are not probabilities")
    return problems


def smoke_query(
    admin: TritonAdmin,
    repository: Path,
    version: int,
    serving: ServingSettings,
    through_ensemble: bool = False,
) -> None:
    """A batch of known and unknown users through the server at `version`, checked.

    Stage by stage (each named with its version) before the switch, because the ensemble
    can only pin one version; through the ensemble (no version named) after it.
    """
    interfaces = version_interfaces(repository, version, serving)
    tensors = _smoke_inputs(repository, version, serving)
    top_k = int(tensors["top_k"][0, 0])
    with np.load(repository / "reorder" / str(version) / CATALOG_FILE) as catalog:
        catalog_ids = catalog["item_ids"]
    calls: list[tuple[str, int | None, StageInterface]] = (
        [(ENSEMBLE_NAME, None, ensemble_interface(interfaces))]
        if through_ensemble
        else [(name, version, interfaces[name]) for name in STAGE_MODEL_NAMES]
    )
    for name, pinned, interface in calls:
        inputs = {t.name: (tensors[t.name], t.dtype) for t in interface.inputs if t.name in tensors}
        outputs = tuple(t.name for t in interface.outputs)
        try:
            tensors.update(admin.infer(name, pinned, inputs, outputs))
        except InferenceServerException as exc:
            raise VersionError(f"smoke query: {name} (version {version}) failed: {exc}") from exc
    problems = _answer_problems(tensors, version, top_k, catalog_ids)
    if problems:
        where = "the ensemble" if through_ensemble else "the stages"
        raise refused(version, f"the smoke query through {where} answered wrongly", problems)
