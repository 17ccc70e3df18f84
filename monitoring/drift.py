"""Compare live traffic with a version's reference profile and name the drifting features.

    python -m monitoring.drift --profile model_repository/user_features/1/reference_profile.json \
        --metrics-url http://127.0.0.1:8002/metrics [--window 60] [--json out.json]
    python -m monitoring.drift --profile ... --request-log requests.jsonl

Live counts come from the serving models' Prometheus counters
(`recsys_feature_bin_total`, `recsys_score_bin_total`; with --window, the increase over
that many seconds) or from a JSON-lines log of raw requests. Per feature: the population
stability index (PSI) and, for numbers, the Kolmogorov-Smirnov distance over the bins.
A feature drifts when either passes its threshold (config/default.yaml `monitoring:`).
Exit code 1 when something drifts, so a cron job or CI gate can act on it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from monitoring.profile import MISSING, FeatureProfile, ReferenceProfile
from recsys.settings import MonitoringSettings, load_settings

FEATURE_METRIC = "recsys_feature_bin_total"
SCORE_METRIC = "recsys_score_bin_total"
SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)\s*$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Counts = dict[str, dict[str, float]]


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    ks: float | None
    live_count: int
    drifting: bool
    top_shift: str  # the bin whose share moved most, e.g. "__other__ 0.02 -> 0.61"


def psi(reference: np.ndarray, live: np.ndarray, eps: float = 1e-4) -> float:
    expected = np.clip(reference, eps, None)
    actual = np.clip(live, eps, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_over_bins(profile: FeatureProfile, reference: np.ndarray, live: np.ndarray) -> float:
    """KS distance between the two binned CDFs, over the ordered (non-missing) bins."""
    ordered = [i for i, b in enumerate(profile.bins) if b != MISSING]
    ref, cur = reference[ordered], live[ordered]
    if ref.sum() == 0 or cur.sum() == 0:
        return 0.0
    return float(np.max(np.abs(np.cumsum(ref / ref.sum()) - np.cumsum(cur / cur.sum()))))


def compare(
    profile: ReferenceProfile, live: Counts, settings: MonitoringSettings
) -> list[FeatureDrift]:
    results = []
    for feature in (*profile.features, profile.scores):
        counts = live.get(feature.name, {})
        live_counts = np.array([counts.get(b, 0.0) for b in feature.bins], dtype=np.float64)
        total = live_counts.sum()
        reference = np.asarray(feature.reference, dtype=np.float64)
        if total < settings.min_count:
            results.append(FeatureDrift(feature.name, float("nan"), None, int(total), False,
                                        f"only {int(total)} observations"))  # fmt: skip
            continue
        shares = live_counts / total
        value = psi(reference, shares)
        ks = ks_over_bins(feature, reference, live_counts) if feature.kind == "numeric" else None
        moved = int(np.argmax(np.abs(shares - reference)))
        drifting = value > settings.psi_threshold or (ks is not None and ks > settings.ks_threshold)
        results.append(FeatureDrift(
            feature.name, value, ks, int(total), drifting,
            f"{feature.bins[moved]} {reference[moved]:.2f} -> {shares[moved]:.2f}",
        ))  # fmt: skip
    return results


def parse_metrics(text: str, version: str | None = None) -> Counts:
    """Bin counts per feature from Prometheus text, summed over models (and one version)."""
    counts: Counts = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or match.group(1) not in (FEATURE_METRIC, SCORE_METRIC):
            continue
        labels = dict(LABEL.findall(match.group(2)))
        if version is not None and labels.get("version") != version:
            continue
        feature = "score" if match.group(1) == SCORE_METRIC else labels["feature"]
        bins = counts.setdefault(feature, {})
        bins[labels["bin"]] = bins.get(labels["bin"], 0.0) + float(match.group(3))
    return counts


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def subtract(after: Counts, before: Counts) -> Counts:
    return {
        feature: {b: value - before.get(feature, {}).get(b, 0.0) for b, value in bins.items()}
        for feature, bins in after.items()
    }


def _column(rows: list[dict[str, object]], name: str) -> np.ndarray:
    column = np.empty(len(rows), dtype=object)
    column[:] = [row.get(name) for row in rows]
    return column


def counts_from_log(profile: ReferenceProfile, log: Path) -> Counts:
    """Bin counts from a JSON-lines log of raw requests (and optional served `scores`)."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    counts: Counts = {}
    for feature in profile.features:
        values = _column(rows, feature.name)
        counts[feature.name] = {k: float(v) for k, v in feature.counts(values).items()}
    served = [np.asarray(row["scores"], dtype=np.float64).reshape(-1)
              for row in rows if row.get("scores") is not None]  # fmt: skip
    if served:
        scores = np.concatenate(served)
        counts["score"] = {k: float(v) for k, v in profile.scores.counts(scores).items()}
    return counts


def format_report(results: list[FeatureDrift], settings: MonitoringSettings) -> str:
    lines = [
        f"drift report (PSI > {settings.psi_threshold} or KS > {settings.ks_threshold} drifts; "
        f"features with fewer than {settings.min_count} observations are not judged)",
        f"{'feature':<10} {'PSI':>8} {'KS':>6} {'count':>8}  status    largest shift",
    ]
    for r in results:
        ks = f"{r.ks:.3f}" if r.ks is not None else "-"
        status = "DRIFTING" if r.drifting else "ok"
        lines.append(f"{r.feature:<10} {r.psi:>8.3f} {ks:>6} {r.live_count:>8}  {status:<9} "
                     f"{r.top_shift}")  # fmt: skip
    drifting = [r.feature for r in results if r.drifting]
    lines.append(f"drifting features: {', '.join(drifting) if drifting else 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", type=Path, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--metrics-url", help="Triton metrics endpoint, e.g. :8002/metrics")
    source.add_argument("--request-log", type=Path, help="JSON lines of raw requests")
    parser.add_argument(
        "--window",
        type=float,
        default=0.0,
        help="seconds between two scrapes; 0 uses counts since server start",
    )
    parser.add_argument("--version", default=None, help="only this model version's counters")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = load_settings(args.config).monitoring
    try:
        profile = ReferenceProfile.load(args.profile)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot read reference profile {args.profile}: {exc}", file=sys.stderr)
        return 2
    if args.request_log:
        live = counts_from_log(profile, args.request_log)
    else:
        before = parse_metrics(scrape(args.metrics_url), args.version)
        if args.window > 0:
            time.sleep(args.window)
            live = subtract(parse_metrics(scrape(args.metrics_url), args.version), before)
        else:
            live = before
    results = compare(profile, live, settings)
    print(format_report(results, settings))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if any(r.drifting for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
