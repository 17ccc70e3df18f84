"""Request overrides of user features: parsed and checked against the feature schema.

Used by the `user_features` Triton model and by the in-process chain, so both refuse the
same values with the same message. A value outside its declared range or length is a
malformed request, not a feature value: a finite but absurd number would normalise to a
huge value and come back as meaningless scores.
"""

from __future__ import annotations

import unicodedata

import numpy as np

from recsys.schema import Feature


class OverrideError(ValueError):
    """An override value the schema does not allow; the message names the input."""


def _check_range(name: str, feature: Feature, values: np.ndarray) -> None:
    if feature.range is None:
        return
    low, high = feature.range
    if np.any((values < low) | (values > high)):
        raise OverrideError(f"input '{name}' must be between {low:g} and {high:g}")


def _decode(name: str, feature: Feature, value: object) -> str:
    raw = value if isinstance(value, bytes) else str(value).encode()
    if len(raw) > feature.max_length:
        raise OverrideError(
            f"input '{name}' is {len(raw)} bytes long; at most {feature.max_length} accepted"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OverrideError(f"input '{name}' is not valid UTF-8: {exc}") from exc
    # Look-alike spellings (composed vs decomposed accents) must find the same category.
    return unicodedata.normalize("NFC", text)


def parse_override(name: str, feature: Feature, values: np.ndarray) -> np.ndarray:
    """[B] (or [B, T] token lists for multi-hot) request values -> raw feature values [B]."""
    if feature.kind == "multi_hot":
        rows = values.reshape(len(values), -1)
        out = np.empty(len(rows), dtype=object)
        # Empty strings pad ragged token lists within one batch.
        out[:] = [[t for v in row if (t := _decode(name, feature, v))] for row in rows]
        return out
    values = values.reshape(-1)
    if feature.value_type == "float32":
        if not np.all(np.isfinite(values)):
            raise OverrideError(f"input '{name}' must be finite (got NaN or inf)")
        _check_range(name, feature, values)
        return values.astype(np.float32)
    if feature.value_type == "int64":
        _check_range(name, feature, values)
        return values.astype(np.int64)
    out = np.empty(len(values), dtype=object)
    out[:] = [_decode(name, feature, v) for v in values]
    return out
