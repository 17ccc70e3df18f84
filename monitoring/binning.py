"""Vectorised binning of raw values into a reference profile's bins (numpy only).

Counting happens on every served batch, so nothing here goes through pandas or loops over
values in Python: what a profile implies (sorted edges, sorted tracked values and the bin
each maps to) is compiled once into a `Binner`, and a batch is binned with a few numpy
calls. `is_missing` follows pandas' notion of null for what raw columns can hold: None and
NaN (float or inside an object array).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISSING = "__missing__"
OTHER = "__other__"


def is_missing(values: np.ndarray) -> np.ndarray:
    """Null mask: NaN in float arrays; None or NaN in object arrays; nothing otherwise."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind != "O":
        return np.zeros(values.shape, dtype=bool)
    # Object comparison calls each element's __ne__ with no identity shortcut, so NaN (the
    # one value unequal to itself) is found without a Python loop.
    return np.equal(values, None) | np.not_equal(values, values)


def as_strings(values: np.ndarray) -> np.ndarray:
    """Values as the profile stores tracked categories: str(value), one C-level pass."""
    return np.asarray(values).astype(str)


@dataclass(frozen=True)
class Binner:
    """One feature's bins compiled for lookups. Bin indices follow the profile's `bins`."""

    size: int  # number of bins
    missing: int  # index of the __missing__ bin
    edges: np.ndarray | None  # numeric: inner edges; bin i holds edges[i-1] <= x < edges[i]
    keys: np.ndarray | None  # categorical: tracked values, sorted (fixed-width unicode)
    key_bins: np.ndarray | None  # categorical: bin index of each sorted key
    other: int  # categorical: index of the __other__ bin (-1 for numeric)

    @classmethod
    def compile(
        cls, kind: str, bins: tuple[str, ...], edges: tuple[float, ...], values: tuple[str, ...]
    ) -> Binner:
        missing = bins.index(MISSING)
        if kind == "numeric":
            return cls(len(bins), missing, np.asarray(edges, dtype=np.float64), None, None, -1)
        position = {label: i for i, label in enumerate(bins)}
        order = np.argsort(np.asarray(values, dtype=str), kind="stable")
        keys = np.asarray(values, dtype=str)[order]
        key_bins = np.asarray([position[values[i]] for i in order], dtype=np.intp)
        return cls(len(bins), missing, None, keys, key_bins, position[OTHER])

    def index(self, values: np.ndarray) -> np.ndarray:
        """The bin index of every value (intp array, same length)."""
        values = np.asarray(values).reshape(-1)
        missing = is_missing(values)
        if self.edges is not None:
            numbers = np.where(missing, 0.0, values).astype(np.float64)
            found = np.searchsorted(self.edges, numbers, side="right")
        else:
            assert self.keys is not None and self.key_bins is not None
            found = np.full(len(values), self.other, dtype=np.intp)
            if len(self.keys):
                strings = as_strings(values)
                at = np.minimum(np.searchsorted(self.keys, strings), len(self.keys) - 1)
                hit = self.keys[at] == strings
                found[hit] = self.key_bins[at[hit]]
        return np.where(missing, self.missing, found)

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Count per bin (int64 array of length `size`)."""
        return np.bincount(self.index(values), minlength=self.size)
