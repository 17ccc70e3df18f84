"""The offline metrics gate: a candidate may be worse than what serves by a tolerance at most."""

from __future__ import annotations

from typing import Any

DEFAULT_TOLERANCE = 0.01
# Offline metrics the gate compares: +1 higher is better, -1 lower is better.
# The served list's recall and NDCG are what `make evaluate` and the demo report.
GATED_METRICS: dict[str, int] = {
    "served_recall_at_k": 1,
    "served_ndcg_at_k": 1,
    "retrieval_recall_at_k": 1,
    "ranking_auc": 1,
    "ranking_logloss": -1,
}


def metrics_gate(
    serving: dict[str, Any], candidate: dict[str, Any], tolerance: float
) -> tuple[list[str], list[str]]:
    """(report lines, problems): the candidate may be worse by at most `tolerance` (absolute)."""
    old, new = serving.get("metrics") or {}, candidate.get("metrics") or {}
    lines, problems = [], []
    if old.get("recall_k") != new.get("recall_k"):
        problems.append(
            f"recall@k is measured at k={new.get('recall_k')} for the candidate but "
            f"k={old.get('recall_k')} for the serving version: not comparable"
        )
    for name, direction in GATED_METRICS.items():
        if name not in new and name in old:
            problems.append(f"{name} is not recorded for the candidate")
            continue
        if name not in old or name not in new:
            # A serving version from before this metric existed: nothing to compare with.
            lines.append(f"{name}: not recorded for the serving version (not compared)")
            continue
        worse_by = (float(old[name]) - float(new[name])) * direction
        verdict = "ok" if worse_by <= tolerance else "WORSE"
        lines.append(f"{name}: {float(old[name]):.4f} -> {float(new[name]):.4f} ({verdict})")
        if worse_by > tolerance:
            problems.append(
                f"{name} {float(new[name]):.4f} is worse than the serving version's "
                f"{float(old[name]):.4f} by {worse_by:.4f} (tolerance {tolerance})"
            )
    return lines, problems
