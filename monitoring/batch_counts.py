"""What one served batch adds to each live counter, as one numpy vector per batch.

A plan is compiled once per model version from what does not change between requests
(the feature schema, the workflow's feature spec, the reference profile): which counters
exist, in which slot, and every feature's bins as padded matrices. Counting a batch then
stacks the monitored columns and bins all features of a kind at once (one broadcast
comparison for the numeric edges, one for the tracked categories), so its cost does not
grow with a Python loop over features or values. `monitoring.live_metrics` turns the
non-zero slots into counter increments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitoring.binning import as_strings, is_missing
from monitoring.profile import FeatureProfile, ReferenceProfile
from recsys.contract import OOV_INDEX, FeatureSpec
from recsys.schema import FeatureSchema

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]  # (metric family, sorted labels)
DECILES = 10


def key(family: str, **labels: str) -> Key:
    return family, tuple(sorted(labels.items()))


@dataclass(frozen=True)
class _NumericGroup:
    names: tuple[str, ...]
    edges: np.ndarray  # [F, E] inner edges, padded with +inf (never passed)
    missing_bin: np.ndarray  # [F]
    first_slot: np.ndarray  # [F] slot of each feature's bin 0

    @classmethod
    def compile(cls, features: Sequence[FeatureProfile], first_slot: list[int]) -> _NumericGroup:
        width = max((len(f.edges) for f in features), default=0)
        edges = np.full((len(features), width), np.inf)
        for row, feature in enumerate(features):
            edges[row, : len(feature.edges)] = feature.edges
        return cls(tuple(f.name for f in features), edges,
                   np.asarray([f.binner.missing for f in features], dtype=np.intp),
                   np.asarray(first_slot, dtype=np.intp))  # fmt: skip

    def slots(self, stacked: np.ndarray, missing: np.ndarray) -> np.ndarray:
        numbers = np.where(missing, 0.0, stacked).astype(np.float64)
        # side="right" of searchsorted: the number of edges <= x.
        found = np.count_nonzero(self.edges[:, None, :] <= numbers[:, :, None], axis=2)
        return self.first_slot[:, None] + np.where(missing, self.missing_bin[:, None], found)


@dataclass(frozen=True)
class _CategoricalGroup:
    names: tuple[str, ...]
    keys: np.ndarray  # [F, K] tracked values (unicode), padded
    key_bins: np.ndarray  # [F, K] bin of each key; -1 marks padding (never a hit)
    other_bin: np.ndarray  # [F]
    missing_bin: np.ndarray  # [F]
    first_slot: np.ndarray  # [F]

    @classmethod
    def compile(
        cls, features: Sequence[FeatureProfile], first_slot: list[int]
    ) -> _CategoricalGroup:
        width = max((len(f.values) for f in features), default=0)
        keys = np.full((len(features), width), "", dtype=object)
        key_bins = np.full((len(features), width), -1, dtype=np.intp)
        for row, feature in enumerate(features):
            keys[row, : len(feature.values)] = feature.values
            key_bins[row, : len(feature.values)] = [feature.bins.index(v) for v in feature.values]
        return cls(tuple(f.name for f in features), keys.astype(str), key_bins,
                   np.asarray([f.binner.other for f in features], dtype=np.intp),
                   np.asarray([f.binner.missing for f in features], dtype=np.intp),
                   np.asarray(first_slot, dtype=np.intp))  # fmt: skip

    def slots(self, stacked: np.ndarray, missing: np.ndarray) -> np.ndarray:
        if self.keys.shape[1] == 0:  # nothing tracked: every present value is __other__
            found = np.broadcast_to(self.other_bin[:, None], missing.shape)
            return self.first_slot[:, None] + np.where(missing, self.missing_bin[:, None], found)
        strings = as_strings(stacked)
        match = (self.keys[:, None, :] == strings[:, :, None]) & (self.key_bins[:, None, :] >= 0)
        hit = match.any(axis=2)
        rows = np.arange(len(self.names))[:, None]
        found = np.where(hit, self.key_bins[rows, match.argmax(axis=2)], self.other_bin[:, None])
        return self.first_slot[:, None] + np.where(missing, self.missing_bin[:, None], found)


def _stack(raw: dict[str, np.ndarray], names: tuple[str, ...], rows: int) -> np.ndarray:
    if not names:
        return np.empty((0, rows))
    return np.stack([np.asarray(raw[name]).reshape(-1) for name in names])


@dataclass(frozen=True)
class UserCountPlan:
    """Counters of the user feature transform: rows, OOV, missing values, feature bins."""

    keys: tuple[Key, ...]  # slot -> counter; slot 0 is recsys_requests_total
    oov_columns: np.ndarray  # columns of the categorical matrix whose OOV index is counted
    oov_first: int
    numeric: _NumericGroup
    categorical: _CategoricalGroup
    plain: tuple[str, ...]  # monitored features without profile bins: missing counted only
    missing_first: int  # missing counters: numeric, categorical, then plain features

    @classmethod
    def compile(
        cls, profile: ReferenceProfile | None, spec: FeatureSpec, schema: FeatureSchema
    ) -> UserCountPlan:
        monitored = schema.monitored()
        keys: list[Key] = [key("recsys_requests_total")]
        tracked = {schema.users.id} | {n for n, f in monitored.items() if f.kind == "categorical"}
        oov = [(name, start) for name, width, start in
               zip(spec.categorical, spec.widths, spec.offsets(), strict=True)
               if name in tracked and width == 1]  # fmt: skip
        oov_first = len(keys)
        keys += [key("recsys_oov_total", feature=name) for name, _ in oov]
        binned = {f.name: f for f in profile.features} if profile else {}
        numeric = [f for f in binned.values() if f.kind == "numeric"]
        categorical = [f for f in binned.values() if f.kind != "numeric"]
        plain = tuple(n for n in monitored if n not in binned)
        # Missing counters in group order (numeric, categorical, plain), so one vector of
        # per-feature null counts fills them in one assignment.
        ordered = [*(f.name for f in numeric), *(f.name for f in categorical), *plain]
        missing_first = len(keys)
        keys += [key("recsys_missing_total", feature=name) for name in ordered]
        firsts: dict[str, int] = {}
        for feature in (*numeric, *categorical):
            firsts[feature.name] = len(keys)
            keys += [key("recsys_feature_bin_total", feature=feature.name, bin=label)
                     for label in feature.bins]  # fmt: skip
        return cls(
            tuple(keys), np.asarray([start for _, start in oov], dtype=np.intp), oov_first,
            _NumericGroup.compile(numeric, [firsts[f.name] for f in numeric]),
            _CategoricalGroup.compile(categorical, [firsts[f.name] for f in categorical]),
            plain, missing_first,
        )  # fmt: skip

    def count(self, raw: dict[str, np.ndarray], categorical: np.ndarray) -> np.ndarray:
        """Increment of every slot for this batch (float64 vector aligned with `keys`)."""
        rows = len(categorical)
        out = np.zeros(len(self.keys))
        out[0] = rows
        if len(self.oov_columns):
            hits = np.count_nonzero(categorical[:, self.oov_columns] == OOV_INDEX, axis=0)
            out[self.oov_first : self.oov_first + len(hits)] = hits
        numbers = _stack(raw, self.numeric.names, rows)
        categories = _stack(raw, self.categorical.names, rows)
        null_numbers, null_categories = is_missing(numbers), is_missing(categories)
        nulls = [null_numbers.sum(axis=1), null_categories.sum(axis=1)]
        if self.plain:
            nulls.append(is_missing(_stack(raw, self.plain, rows)).sum(axis=1))
        nulls_per_feature = np.concatenate(nulls)
        out[self.missing_first : self.missing_first + len(nulls_per_feature)] = nulls_per_feature
        slots = np.concatenate([
            self.numeric.slots(numbers, null_numbers).ravel(),
            self.categorical.slots(categories, null_categories).ravel(),
        ])  # fmt: skip
        out += np.bincount(slots, minlength=len(self.keys))
        return out


@dataclass(frozen=True)
class ResultCountPlan:
    """Counters of the answers: short results, served items by decile, score bins."""

    keys: tuple[Key, ...]  # slot 0 short results, then deciles 0..9, then score bins
    score_first: int
    profile: FeatureProfile | None

    @classmethod
    def compile(cls, profile: ReferenceProfile | None) -> ResultCountPlan:
        keys = [key("recsys_short_results_total")]
        keys += [key("recsys_served_items_total", popularity_decile=str(d)) for d in range(DECILES)]
        score_first = len(keys)
        if profile is not None:
            keys += [key("recsys_score_bin_total", bin=label) for label in profile.scores.bins]
        return cls(tuple(keys), score_first, profile.scores if profile else None)

    def count(
        self, scores: Sequence[np.ndarray], deciles: Sequence[np.ndarray], top_k: Sequence[int]
    ) -> np.ndarray:
        out = np.zeros(len(self.keys))
        lengths = np.fromiter(map(len, scores), dtype=np.int64, count=len(scores))
        out[0] = np.count_nonzero(lengths < np.asarray(top_k, dtype=np.int64))
        if deciles:
            served = np.bincount(np.concatenate(list(deciles)).astype(np.intp))
            if len(served) > DECILES:
                raise ValueError(f"popularity decile {len(served) - 1} is outside 0..9")
            out[1 : 1 + len(served)] = served
        if self.profile is not None and len(scores):
            out[self.score_first :] = self.profile.binner.counts(np.concatenate(list(scores)))
        return out
