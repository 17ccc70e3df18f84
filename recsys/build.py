"""Build everything the server needs, in order: data -> workflows -> models -> repository.

    python -m recsys.build [--config FILE] [--data-dir DIR] [--artifacts DIR]
                           [--repository DIR] [--version N] [--dask-scheduler ADDR]

Without --data-dir the seeded synthetic generator writes the default data set; with it,
the same pipeline runs on real data in the documented format (recsys/datagen.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys.datagen import generate, read_raw, split, write_raw
from recsys.settings import PROJECT_ROOT, Settings, load_settings
from serving.repository import build_model_repository
from training.train import METRICS_FILE, train_and_export
from workflows.features import fit_workflows

DEFAULT_ARTIFACTS = PROJECT_ROOT / "artifacts"
DEFAULT_REPOSITORY = PROJECT_ROOT / "model_repository"


@contextmanager
def step(title: str) -> Iterator[None]:
    print(f"==> {title} ...", flush=True)
    started = time.monotonic()
    yield
    print(f"    done in {time.monotonic() - started:.1f}s", flush=True)


def build_artifacts(
    settings: Settings,
    artifacts: Path,
    data_dir: Path | None = None,
    dask_scheduler: str | None = None,
) -> dict[str, float | int]:
    """Data, fitted workflows and trained models under `artifacts`; returns the metrics."""
    raw_dir = artifacts / "data"
    if data_dir is None:
        with step(
            f"generating synthetic data ({settings.data.num_users} users, "
            f"{settings.data.num_items} items)"
        ):
            write_raw(generate(settings.data), raw_dir)
        data_dir = raw_dir
    with step(f"reading {data_dir} and splitting by time"):
        data = split(read_raw(data_dir), settings.data.validation_fraction)
        print(f"    {len(data.train)} training and {len(data.valid)} validation interactions")
    workflows_dir = artifacts / "workflows"
    with step("fitting NVTabular workflows on the training split"):
        client = None
        if dask_scheduler:
            from distributed import Client

            client = Client(dask_scheduler)
        if workflows_dir.exists():
            shutil.rmtree(workflows_dir)
        fitted = fit_workflows(
            data, settings.workflows, artifacts / "workflow_stats", client=client
        )
        fitted.save(workflows_dir)
    with step("training two-tower retrieval and DLRM ranking"):
        metrics = train_and_export(
            data, fitted, settings.training, artifacts / "models",
            settings.serving.num_candidates, settings.serving.default_top_k,
        )  # fmt: skip
    return metrics


def format_metrics(metrics: dict[str, float | int]) -> str:
    k = metrics["recall_k"]
    return "\n".join(
        [
            f"    retrieval recall@{k}: {metrics['retrieval_recall_at_k']:.3f} "
            f"(popularity {metrics['retrieval_recall_at_k_popularity']:.3f})",
            f"    ranking AUC:       {metrics['ranking_auc']:.3f} "
            f"(popularity {metrics['ranking_auc_popularity']:.3f})",
            f"    ranking logloss:   {metrics['ranking_logloss']:.3f} "
            f"(popularity {metrics['ranking_logloss_popularity']:.3f})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="real data in the documented format"
    )
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--version", type=int, default=1, help="model set version to write")
    parser.add_argument("--dask-scheduler", default=None, help="fit workflows on this Dask cluster")
    parser.add_argument("--skip-training", action="store_true", help="reuse existing artefacts")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    if args.skip_training:
        metrics = json.loads((args.artifacts / "models" / METRICS_FILE).read_text())
    else:
        metrics = build_artifacts(settings, args.artifacts, args.data_dir, args.dask_scheduler)
    print("offline metrics on the validation split:")
    print(format_metrics(metrics))
    with step(f"writing model repository {args.repository} (version {args.version})"):
        build_model_repository(args.artifacts, args.repository, settings.serving, args.version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
