"""Build everything the server needs, in order: data -> workflows -> models -> repository.

    python -m pipeline.build [--config FILE] [--schema NAME] [--data-dir DIR]
                             [--artifacts DIR] [--repository DIR] [--version N]
                             [--dask-scheduler ADDR]

The feature schema (config/schemas/<name>.yaml) says what the data is. Without
--data-dir the planted-structure generator makes data for that schema; with it, the data
directory is read in the layout the schema declares (e.g. an unzipped MovieLens release).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datagen import DataFormatError, generate, read_data, split, write_canonical
from recsys.contract import METRICS_FILE, SCHEMA_FILE
from recsys.schema import FeatureSchema, SchemaError, load_schema
from recsys.settings import PROJECT_ROOT, Settings, SettingsError, load_settings
from serving.repository import build_model_repository
from training.export import train_and_export
from workflows.fitted import fit_workflows

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
    schema = load_schema(settings.feature_schema)
    raw_dir = artifacts / "data"
    if data_dir is None:
        with step(
            f"generating synthetic data for schema {schema.name!r} "
            f"({settings.data.num_users} users, {settings.data.num_items} items)"
        ):
            raw = generate(schema, settings.data)
    else:
        with step(f"reading {data_dir} as schema {schema.name!r}"):
            raw = read_data(schema, data_dir)
    write_canonical(raw, raw_dir)
    (artifacts / SCHEMA_FILE).write_text(schema.to_json())
    with step(f"splitting ({settings.data.split})"):
        data = split(raw, settings.data.validation_fraction, settings.data.split,
                     settings.data.leave_last_n)  # fmt: skip
        print(f"    {len(data.train)} training and {len(data.valid)} validation interactions")
    workflows_dir = artifacts / "workflows"
    with step("fitting NVTabular workflows on the training split"):
        client = None
        if dask_scheduler:
            from distributed import Client

            client = Client(dask_scheduler)
        if workflows_dir.exists():
            shutil.rmtree(workflows_dir)
        fitted = fit_workflows(data, schema, artifacts / "workflow_stats", client=client)
        fitted.save(workflows_dir)
    with step("training two-tower retrieval and DLRM ranking"):
        metrics = train_and_export(
            data, schema, fitted, settings.training, artifacts / "models",
            settings.serving.num_candidates, settings.serving.default_top_k,
            settings.serving.history_length, settings.serving.retrieval_weight,
            settings.serving.index,
        )  # fmt: skip
    return metrics


def artifacts_schema(artifacts: Path) -> FeatureSchema:
    return FeatureSchema.from_json((artifacts / SCHEMA_FILE).read_text())


def format_metrics(metrics: dict[str, float | int]) -> str:
    """The served quality beside the baselines, as the report and the demo show it."""
    k = metrics["recall_k"]

    def row(name: str, key: str) -> str:
        def value(system: str, suffix: str = "") -> str:
            found = metrics.get(f"{system}_{key}{suffix}")
            return "   -  " if found is None else f"{found:6.3f}"

        return (f"    {name:<12} served {value('served')}  most-popular {value('popularity')}"
                f"  ALS {value('als')}   (warm {value('served', '_warm')}, "
                f"cold {value('served', '_cold')})")  # fmt: skip

    return "\n".join(
        [
            row(f"recall@{k}", "recall_at_k"),
            row(f"NDCG@{k}", "ndcg_at_k"),
            f"    ranking AUC  {metrics['ranking_auc']:.3f} "
            f"(per-item CTR {metrics['ranking_auc_popularity']:.3f}), "
            f"logloss {metrics['ranking_logloss']:.3f} "
            f"(per-item CTR {metrics['ranking_logloss_popularity']:.3f})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--schema", default=None, help="feature schema name or path")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data in the layout the schema declares"
    )
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--version", type=int, default=1, help="model set version to write")
    parser.add_argument("--dask-scheduler", default=None, help="fit workflows on this Dask cluster")
    parser.add_argument("--skip-training", action="store_true", help="reuse existing artefacts")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (SettingsError, SchemaError, DataFormatError) as exc:
        # Refused before anything was written: nothing to clean up.
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, args.schema)
    load_schema(settings.feature_schema)  # a bad schema fails here, before any work
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise DataFormatError(f"--data-dir {args.data_dir} is not a directory")
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
