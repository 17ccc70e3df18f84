"""Loading the item index with its search-time parameters, for serving and training alike.

The parameters an approximate index is searched with (HNSW's efSearch, IVF's nprobe) decide
its recall, which the build measures and checks against `serving.index.min_recall`. faiss
1.8 stores both in the index file, so the file written at build time carries the values its
recall was measured with; `load_index` re-applies them through faiss.ParameterSpace (or
applies overrides) so that what serves is stated, not inherited from faiss defaults.
Bottom layer: imports only faiss, so serving can use it without importing training.
"""

from __future__ import annotations

from pathlib import Path

import faiss

# faiss.ParameterSpace names of the parameters that change what a search returns.
SEARCH_PARAMETERS = ("efSearch", "nprobe")


class IndexFileError(ValueError):
    """An index file that cannot serve inner-product retrieval, with the file named."""


def _searched_index(index: faiss.Index) -> faiss.Index:
    """The index inside the wrappers training/index.py builds (IndexRefine over an
    IndexPreTransform): the one whose parameters decide what a search finds."""
    found = faiss.downcast_index(index)
    while isinstance(found, faiss.IndexRefine | faiss.IndexPreTransform):
        inner = found.base_index if isinstance(found, faiss.IndexRefine) else found.index
        found = faiss.downcast_index(inner)
    return found


def search_parameters(index: faiss.Index) -> dict[str, int]:
    """The search-time parameters `index` would search with now (empty for exact search).
    The caller keeps `index` referenced: faiss' downcast wrappers do not own what they wrap."""
    searched = _searched_index(index)
    if isinstance(searched, faiss.IndexHNSW):
        return {"efSearch": int(searched.hnsw.efSearch)}
    if isinstance(searched, faiss.IndexIVF):
        return {"nprobe": int(searched.nprobe)}
    return {}


def apply_search_parameters(index: faiss.Index, parameters: dict[str, int]) -> None:
    """Set each named search parameter; a parameter the index type lacks is an error (a
    configured nprobe on an HNSW index would otherwise be silently ignored)."""
    known = search_parameters(index)
    for name, value in parameters.items():
        if name not in known:
            raise ValueError(
                f"search parameter {name}={value} does not apply to a "
                f"{type(_searched_index(index)).__name__} (it takes {sorted(known) or 'none'})"
            )
        if value < 1:
            raise ValueError(f"search parameter {name} must be >= 1, got {value}")
        faiss.ParameterSpace().set_index_parameter(index, name, int(value))


def load_index(path: Path, overrides: dict[str, int] | None = None) -> faiss.Index:
    """Read an item index, check it scores by inner product, and set its search parameters:
    `overrides` where given, otherwise the values stored with it at build time."""
    if not path.exists():
        raise IndexFileError(f"item index {path} does not exist")
    index = faiss.read_index(str(path))
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        # Scores are inner products with a popularity coordinate (training/models.py);
        # an L2 index would rank by distance and break the served order silently.
        raise IndexFileError(
            f"item index {path} uses metric {index.metric_type}, not inner product "
            f"({faiss.METRIC_INNER_PRODUCT})"
        )
    apply_search_parameters(index, search_parameters(index) | (overrides or {}))
    return index
