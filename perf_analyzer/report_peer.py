"""The report's merlin-systems section: the project's ensemble beside merlin-systems' export
of the same pipeline (perf_analyzer/merlin_peer/), both swept over gRPC by perf_analyzer at
the same concurrencies in the same run."""

from __future__ import annotations

import pandas as pd

from perf_analyzer.report_tables import P99_BOUND_MS, best_under_bound, markdown

PEER_TARGET = 5.0  # issue 13: the ensemble serves >= 5x merlin-systems' export
PEER_SERIES = "merlin-systems executor, gRPC (perf_analyzer)"
INTRO = """The same pipeline built the way a Merlin user would with merlin-systems 23.08
(`TransformWorkflow` on the saved user workflow, both TorchScript models through
`PredictPyTorch`, `QueryFaiss` on the same index, `SoftmaxSampling`), exported as its
executor repository (`perf_analyzer/merlin_peer/`), served by the same tritonserver after
the project's servers stopped and swept by the same perf_analyzer at the ensemble's gRPC
concurrencies. Its load is the same held-out users, `user_id` only: it has no top_k,
exclusions, overrides or seen-item filter, so each of its requests does less work than
the ensemble's (docs/merlin_peer.md).
"""
_SIDES = ("ensemble", "merlin")
_FIGURES = ("throughput", "p50_ms", "p99_ms", "measurement")


def peer_comparison(project: pd.DataFrame, peer: pd.DataFrame) -> pd.DataFrame:
    """One row per concurrency either series was swept at: both series' requests/s, p50,
    p99 and how each level was measured, and ensemble ÷ peer requests/s (NaN where either
    side has no figure, e.g. a failed level)."""
    sides = [
        table.dropna(subset=["concurrency"])
        .set_index("concurrency")[list(_FIGURES)]
        .add_suffix(f"_{side}")
        for table, side in zip((project, peer), _SIDES, strict=True)
    ]
    frame = sides[0].join(sides[1], how="outer").sort_index().reset_index()
    merlin = frame["throughput_merlin"].where(frame["throughput_merlin"] > 0)
    frame["ratio"] = (frame["throughput_ensemble"] / merlin).astype(float)
    return frame


def _times(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.1f}×"


def peer_headline(project: pd.DataFrame, peer: pd.DataFrame) -> str:
    """The headline table's rows for the peer: the target ratio, and the ratio per level."""
    label = "ensemble ÷ merlin-systems' export"
    peak_project, peak_peer = float(project["throughput"].max()), float(peer["throughput"].max())
    if pd.isna(peak_peer) or peak_peer <= 0:
        missing = "n/a (merlin-systems' export not measured, see its section)"
        return f"| {label}, peak requests/s (gRPC, any p99) | {missing} | ≥ {PEER_TARGET:g}× |"
    ratio = peak_project / peak_peer
    peak = (f"{ratio:.1f}× ({peak_project:.0f} vs {peak_peer:.1f}/s)"
            + (" ✓" if ratio >= PEER_TARGET else " ✗"))  # fmt: skip
    bound_project, bound_peer = best_under_bound(project), best_under_bound(peer)
    if bound_peer > 0:
        bound = f"{bound_project / bound_peer:.1f}× ({bound_project:.0f} vs {bound_peer:.1f}/s)"
    else:
        bound = f"n/a: the export met the bound at no level (ensemble {bound_project:.0f}/s)"
    levels = peer_comparison(project, peer).dropna(subset=["ratio"])
    equal = ", ".join(f"c={r.concurrency}: {r.ratio:.1f}×" for r in levels.itertuples())
    return "\n".join([
        f"| {label}, peak requests/s (gRPC, any p99) | {peak} | ≥ {PEER_TARGET:g}× |",
        f"| {label}, requests/s at p99 ≤ {P99_BOUND_MS:g} ms | {bound} | |",
        f"| {label} at equal concurrency | {equal or 'n/a'} | |",
    ])  # fmt: skip


def peer_section(project: pd.DataFrame, peer: pd.DataFrame, note: str) -> str:
    """The report section: what the peer is, then the per-concurrency table (or why the
    peer was not measured)."""
    if note:
        return f"{INTRO}\nNot measured in this run: {note}"
    frame = peer_comparison(project, peer)
    shown = pd.DataFrame({
        "concurrency": frame["concurrency"],
        "ensemble req/s": frame["throughput_ensemble"],
        "merlin-systems req/s": frame["throughput_merlin"],
        "ensemble ÷ merlin-systems": frame["ratio"].map(_times),
        "ensemble p50 ms": frame["p50_ms_ensemble"],
        "merlin-systems p50 ms": frame["p50_ms_merlin"],
        "ensemble p99 ms": frame["p99_ms_ensemble"],
        "merlin-systems p99 ms": frame["p99_ms_merlin"],
        "measured (ensemble / merlin-systems)": frame["measurement_ensemble"].fillna("-")
        + " / " + frame["measurement_merlin"].fillna("-"),
    })  # fmt: skip
    return f"{INTRO}\n{markdown(shown)}"
