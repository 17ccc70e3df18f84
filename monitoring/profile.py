"""Reference profiles: how features and served scores were distributed at training time.

A profile fixes bins per feature (quantile edges for numbers, the most frequent values
plus `__other__` for categories, a `__missing__` bin for both). The serving models count
live traffic into exactly these bins (exported as Prometheus counters), and the drift
report compares the two distributions bin by bin (monitoring/drift.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.binning import MISSING, OTHER, Binner, is_missing
from recsys.schema import FeatureSchema

SCORE_EDGES = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    kind: str  # "numeric" | "categorical"
    bins: tuple[str, ...]  # bin labels, in order
    reference: tuple[float, ...]  # share of reference rows per bin (sums to 1)
    edges: tuple[float, ...] = ()  # numeric: inner quantile edges
    values: tuple[str, ...] = ()  # categorical: tracked values

    @cached_property
    def binner(self) -> Binner:
        """The bins compiled for vectorised lookups, once per profile (profiles are frozen)."""
        return Binner.compile(self.kind, self.bins, self.edges, self.values)

    def bin_labels(self, values: np.ndarray) -> np.ndarray:
        """The bin label of every value (used by the drift report and tests)."""
        return np.asarray(self.bins, dtype=object)[self.binner.index(values)]

    def counts(self, values: np.ndarray) -> dict[str, int]:
        found = self.binner.counts(values)
        return {label: int(found[i]) for i, label in enumerate(self.bins)}


@dataclass(frozen=True)
class ReferenceProfile:
    features: tuple[FeatureProfile, ...]
    scores: FeatureProfile
    model_version: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def feature(self, name: str) -> FeatureProfile:
        for profile in (*self.features, self.scores):
            if profile.name == name:
                return profile
        raise KeyError(f"no feature {name!r} in the reference profile")

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        raw = json.loads(path.read_text())

        def feature(item: dict) -> FeatureProfile:  # type: ignore[type-arg]
            return FeatureProfile(
                item["name"], item["kind"], tuple(item["bins"]), tuple(item["reference"]),
                tuple(item["edges"]), tuple(item["values"]),
            )  # fmt: skip

        return cls(tuple(feature(f) for f in raw["features"]), feature(raw["scores"]),
                   int(raw["model_version"]), dict(raw["extra"]))  # fmt: skip


def _shares(profile: FeatureProfile, values: np.ndarray) -> tuple[float, ...]:
    counts = profile.counts(values)
    total = sum(counts.values())
    return tuple(counts[b] / total for b in profile.bins)


def numeric_profile(name: str, values: np.ndarray, quantiles: int = 10) -> FeatureProfile:
    present = values[~is_missing(values)].astype(np.float64)
    edges = tuple(np.unique(np.quantile(present, np.linspace(0, 1, quantiles + 1)[1:-1])))
    bins = (*(f"q{i}" for i in range(len(edges) + 1)), MISSING)
    draft = FeatureProfile(name, "numeric", bins, (), edges)
    return FeatureProfile(name, "numeric", bins, _shares(draft, values), edges)


def categorical_profile(name: str, values: np.ndarray, top: int = 20) -> FeatureProfile:
    series = pd.Series(values, dtype=object).dropna()
    tracked = tuple(str(v) for v in series.value_counts().index[:top])
    bins = (*tracked, OTHER, MISSING)
    draft = FeatureProfile(name, "categorical", bins, (), (), tracked)
    return FeatureProfile(name, "categorical", bins, _shares(draft, values), (), tracked)


def score_profile(scores: np.ndarray) -> FeatureProfile:
    edges = SCORE_EDGES[1:-1]
    bins = (*(f"[{lo:.1f},{hi:.1f})" for lo, hi in pairwise(SCORE_EDGES)), MISSING)
    draft = FeatureProfile("score", "numeric", bins, (), edges)
    return FeatureProfile("score", "numeric", bins, _shares(draft, scores), edges)


def build_reference_profile(
    schema: FeatureSchema,
    request_rows: pd.DataFrame,
    served_scores: np.ndarray,
    model_version: int = 0,
) -> ReferenceProfile:
    """`request_rows`: raw user features as requests carry them (one row per request).

    The schema's monitored user features are tracked: continuous ones by quantile bins,
    the others by their most frequent values plus __other__ (a hashed feature with many
    values is tracked by its top values; __other__ still moves when traffic shifts).
    """
    features = tuple(
        numeric_profile(name, request_rows[name].to_numpy())
        if feature.kind == "continuous"
        else categorical_profile(name, request_rows[name].to_numpy())
        for name, feature in schema.monitored().items()
    )
    return ReferenceProfile(features, score_profile(served_scores), model_version)
