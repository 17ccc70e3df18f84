"""The evaluation report: markdown tables, the targets with their margins, and one plot."""

from __future__ import annotations

import datetime
import subprocess
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt

from recsys.settings import PROJECT_ROOT, Settings

SYSTEMS = (
    ("served", "served (two-tower + DLRM, as the server answers)"),
    ("retrieval", "retrieval candidates alone"),
    ("popularity", "most-popular, seen items filtered"),
    ("als", "implicit ALS (cold users: most-popular)"),
)
SEGMENTS = ("", "_warm", "_cold")
RECALL_RATIO_TARGET = 1.2
AUC_MARGIN_TARGET = 0.05

Metrics = dict[str, float | int]


@dataclass(frozen=True)
class ServedCheck:
    """Every validation user asked through a real tritonserver."""

    users: int
    equal: int  # answers equal to the in-process chain's
    recall: float
    recall_warm: float | None
    recall_cold: float | None


@dataclass(frozen=True)
class SweepRow:
    name: str
    updates: dict[str, dict[str, float | int]]
    metrics: Metrics


def _value(metrics: Metrics, key: str) -> str:
    found = metrics.get(key)
    return "-" if found is None else f"{found:.3f}"


def retrieval_table(metrics: Metrics) -> list[str]:
    k = metrics["recall_k"]
    header = (f"| system | recall@{k} | warm | cold | NDCG@{k} | warm | cold | coverage |",
              "|---|---|---|---|---|---|---|---|")  # fmt: skip
    rows = []
    for key, label in SYSTEMS:
        cells = [_value(metrics, f"{key}_recall_at_k{s}") for s in SEGMENTS]
        cells += [_value(metrics, f"{key}_ndcg_at_k{s}") for s in SEGMENTS]
        cells.append(_value(metrics, f"{key}_coverage_at_k"))
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*header, *rows]


def ranking_table(metrics: Metrics) -> list[str]:
    rows = ["| segment | AUC | per-item CTR AUC | logloss | per-item CTR logloss |",
            "|---|---|---|---|---|"]  # fmt: skip
    for suffix, name in zip(SEGMENTS, ("all", "warm", "cold"), strict=True):
        if f"ranking_auc{suffix}" in metrics:
            rows.append(
                f"| {name} | {_value(metrics, f'ranking_auc{suffix}')} | "
                f"{_value(metrics, f'ranking_auc_popularity{suffix}')} | "
                f"{_value(metrics, f'ranking_logloss{suffix}')} | "
                f"{_value(metrics, f'ranking_logloss_popularity{suffix}')} |"
            )
    return rows


def targets(metrics: Metrics, served_recall: float) -> list[str]:
    """The issue's targets, each met or missed by how much (served recall is the endpoint's)."""
    popularity = float(metrics["popularity_recall_at_k"])
    als = float(metrics["als_recall_at_k"])
    auc, auc_pop = float(metrics["ranking_auc"]), float(metrics["ranking_auc_popularity"])
    ratio = served_recall / popularity if popularity else float("inf")

    def verdict(ok: bool, miss: str) -> str:
        return "met" if ok else f"missed by {miss}"

    return [
        f"- served recall@{metrics['recall_k']} {served_recall:.3f} = {ratio:.2f}x most-popular "
        f"({popularity:.3f}); target >= {RECALL_RATIO_TARGET}x: "
        + verdict(ratio >= RECALL_RATIO_TARGET, f"{RECALL_RATIO_TARGET - ratio:.2f}x"),
        f"- served recall {served_recall:.3f} vs ALS {als:.3f}; target >= ALS: "
        + verdict(served_recall >= als, f"{als - served_recall:.3f}"),
        f"- ranking AUC {auc:.3f} vs per-item CTR {auc_pop:.3f} (+{auc - auc_pop:.3f}); target "
        f">= +{AUC_MARGIN_TARGET}: "
        + verdict(auc - auc_pop >= AUC_MARGIN_TARGET, f"{AUC_MARGIN_TARGET - (auc - auc_pop):.3f}"),
    ]


def plot(path: Path, metrics: dict[str, Metrics]) -> None:
    figure, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for axis, (strategy, found) in zip(axes[0], metrics.items(), strict=True):
        width = 0.2
        for i, (key, _) in enumerate(SYSTEMS):
            values = [float(found.get(f"{key}_recall_at_k{s}", 0.0)) for s in SEGMENTS]
            axis.bar([x + i * width for x in range(3)], values, width, label=key)
        axis.set_xticks([x + 1.5 * width for x in range(3)], ["all", "warm", "cold"])
        axis.set_title(f"recall@{found['recall_k']}, {strategy} split")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_report(
    out: Path,
    schema: str,
    data_dir: Path,
    settings: Settings,
    metrics: dict[str, Metrics],
    check: ServedCheck,
    sweep: list[SweepRow],
) -> Path:
    configured = settings.data.split
    plot(out / "recall.png", metrics)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Offline evaluation",
        "",
        f"Run {now}, commit {_commit()}, command `python -m pipeline.evaluate` "
        f"(schema `{schema}`, data `{data_dir}`). Every number below comes from this run.",
        "",
        "Data: MovieLens-100k (GroupLens, University of Minnesota; research use under the "
        "GroupLens data set license, cite Harper & Konstan 2015), taken out of the pinned "
        "`recbole==1.2.0` wheel on PyPI by `make movielens`. Label: rating >= 4. Seen items "
        "are filtered for every system alike; warm users have training interactions, cold "
        "users do not.",
        "",
        f"## Served through Triton ({configured} split)",
        "",
        f"- {check.users} validation users asked over gRPC for recall_k items: "
        f"{check.equal}/{check.users} answers equal the in-process chain's.",
        f"- served recall@{settings.training.recall_k} through the endpoint: {check.recall:.3f} "
        f"(warm {_fmt(check.recall_warm)}, cold {_fmt(check.recall_cold)})",
        "",
        "### Targets",
        "",
        *targets(metrics[configured], check.recall),
        "",
    ]
    for strategy, found in metrics.items():
        lines += [
            f"## {strategy} split: {found['validation_users']} validation users "
            f"({found['validation_users_warm']} warm)",
            "",
            *retrieval_table(found),
            "",
            *ranking_table(found),
            "",
        ]
    lines += ["![recall by segment](recall.png)", ""]
    if sweep:
        k = settings.training.recall_k
        lines += [
            f"## Sweep ({configured} split; offline served recall, not through the endpoint)",
            "",
            "Selected on the validation split itself (there is no third split at this size): "
            "read it as what each knob is worth, not as an unbiased estimate.",
            "",
            f"| setting | changes | served recall@{k} | warm | cold | NDCG@{k} | AUC |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in sweep:
            m = row.metrics
            changes = ", ".join(f"{s}.{k_}={v}" for s, kv in row.updates.items()
                                for k_, v in kv.items()) or "-"  # fmt: skip
            lines.append(
                f"| {row.name} | {changes} | {_value(m, 'served_recall_at_k')} | "
                f"{_value(m, 'served_recall_at_k_warm')} | {_value(m, 'served_recall_at_k_cold')} "
                f"| {_value(m, 'served_ndcg_at_k')} | {_value(m, 'ranking_auc')} |"
            )
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
