"""JSON bodies for the two HTTP services the compiled load tool drives side by side.

One perf_analyzer `--input-data` entry (a held-out user, top_k, an exclude list, maybe a
feature override) becomes the same request for Triton's KServe-v2 endpoint and for the
FastAPI baseline, so both answer the same traffic.
"""

from __future__ import annotations

from typing import Any

CONTRACT_KEYS = ("user_id", "top_k", "exclude_item_ids")


def _datatype(value: object) -> str:
    if isinstance(value, str):
        return "BYTES"
    return "FP32" if isinstance(value, float) else "INT64"


def triton_infer_body(entry: dict[str, Any]) -> dict[str, Any]:
    """KServe v2 JSON body for one perf_analyzer input-data entry (batch of one)."""
    inputs = [
        {"name": "user_id", "shape": [1, 1], "datatype": "INT64", "data": entry["user_id"]},
        {"name": "top_k", "shape": [1, 1], "datatype": "INT32", "data": entry["top_k"]},
    ]
    exclude = entry.get("exclude_item_ids")
    if exclude:
        content = exclude["content"]
        inputs.append({"name": "exclude_item_ids", "shape": [1, len(content)],
                       "datatype": "INT64", "data": content})  # fmt: skip
    for name, value in entry.items():
        if name not in CONTRACT_KEYS:
            inputs.append({"name": name, "shape": [1, 1], "datatype": _datatype(value[0]),
                           "data": value})  # fmt: skip
    return {"inputs": inputs}


def baseline_body(entry: dict[str, Any]) -> dict[str, Any]:
    """The FastAPI baseline's JSON body for the same entry."""
    body: dict[str, Any] = {"user_id": entry["user_id"][0], "top_k": entry["top_k"][0]}
    if entry.get("exclude_item_ids"):
        body["exclude_item_ids"] = entry["exclude_item_ids"]["content"]
    features = {k: v[0] for k, v in entry.items() if k not in CONTRACT_KEYS}
    if features:
        body["features"] = features
    return body
