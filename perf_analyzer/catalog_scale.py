"""A large catalog, served: build a model set whose item index is `serving.index` (HNSW by
default here) over N synthetic items, serve it with the real tritonserver and measure the
ensemble at concurrency 1 with perf_analyzer.

    python -m perf_analyzer.catalog_scale --items 1000000 --users 300 \
        --impressions-per-user 200 --out results/catalog_1m

Writes `<out>/catalog_scale.json` (build and index figures from metrics.json, the served
latency and throughput) and perf_analyzer's CSV. The build is the project's own
(synthetic data -> NVTabular workflows -> training -> index with its recall floor checked
-> model repository), with `serving.index` passed through: pipeline/build.py does not
pass it yet (see the module `build_model_set`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import time
from pathlib import Path

from datagen import generate, split, write_canonical
from perf_analyzer.sweep import build_input_data, held_out_users, run_sweep
from recsys.contract import SCHEMA_FILE
from recsys.schema import load_schema
from recsys.settings import IndexSettings, Settings, load_settings
from serving.launcher import TritonServer
from serving.repository import build_model_repository
from training.export import train_and_export
from workflows.fitted import fit_workflows


def build_model_set(settings: Settings, root: Path) -> tuple[Path, Path, dict[str, float | int]]:
    """Synthetic data of `settings.data`'s size, workflows, models, the configured index and
    model repository version 1 under `root`; returns (artifacts, repository, metrics)."""
    schema = load_schema(settings.feature_schema)
    artifacts, repository = root / "artifacts", root / "model_repository"
    raw = generate(schema, settings.data)
    write_canonical(raw, artifacts / "data")
    (artifacts / SCHEMA_FILE).write_text(schema.to_json())
    data = split(raw, settings.data.validation_fraction, settings.data.split,
                 settings.data.leave_last_n)  # fmt: skip
    fitted = fit_workflows(data, schema, artifacts / "workflow_stats")
    fitted.save(artifacts / "workflows")
    serving = settings.serving
    metrics = train_and_export(
        data, schema, fitted, settings.training, artifacts / "models", serving.num_candidates,
        serving.default_top_k, serving.history_length, serving.retrieval_weight,
        index_settings=serving.index,
    )  # fmt: skip
    build_model_repository(artifacts, repository, serving, version=1)
    return artifacts, repository, metrics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scaled_settings(
    base: Settings,
    items: int,
    index: IndexSettings,
    users: int | None = None,
    impressions_per_user: int | None = None,
) -> Settings:
    """`base` with `items` synthetic items, this index and free loopback ports (the machine
    is shared: another engineer's server may hold the configured ones). The synthetic
    generator holds a dense users x items affinity matrix (float64): 3,000 users x 1M items
    is 24 GB, so a large catalog is built with fewer users, each with more impressions."""
    data = base.data.model_copy(update={
        "num_items": items,
        "num_users": users or base.data.num_users,
        "impressions_per_user": impressions_per_user or base.data.impressions_per_user,
    })  # fmt: skip
    serving = base.serving.model_copy(update={"index": index})
    server = base.server.model_copy(
        update={"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    )
    return base.model_copy(update={"data": data, "serving": serving, "server": server})


def measure_served(
    artifacts: Path, repository: Path, settings: Settings, out: Path, interval_ms: int
) -> dict[str, object]:
    """Concurrency-1 perf_analyzer run against the served repository (gRPC)."""
    held_out = held_out_users(artifacts, 64)
    entries = build_input_data(held_out, held_out.user_ids, settings.serving.default_top_k, 10)
    input_data = out / "input_data.json"
    input_data.write_text(json.dumps(entries))
    with TritonServer(repository, settings.server, out / "tritonserver.log") as server:
        result = run_sweep(server.grpc_url, "grpc", input_data, out / "perf_c1.csv", (1,),
                           interval_ms, stability_percentage=60)  # fmt: skip
    row = result.rows[0] if result.rows else {}
    return {
        "inferences_per_s": row.get("Inferences/Second"),
        "p50_ms": _ms(row.get("p50 latency")),
        "p99_ms": _ms(row.get("p99 latency")),
        "measurement": [a.status for a in result.attempts],
    }


def _ms(microseconds: str | None) -> float | None:
    return None if microseconds in (None, "") else float(microseconds) / 1000  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--impressions-per-user", type=int, default=200)
    parser.add_argument("--index", choices=("exact", "hnsw", "ivf"), default="hnsw")
    parser.add_argument("--out", type=Path, default=Path("results/catalog_scale"))
    parser.add_argument("--measurement-interval-ms", type=int, default=5000)
    args = parser.parse_args(argv)
    base = load_settings(args.config)
    settings = scaled_settings(
        base, args.items, base.serving.index.model_copy(update={"type": args.index}),
        args.users, args.impressions_per_user,
    )  # fmt: skip
    for previous in ("artifacts", "model_repository"):
        shutil.rmtree(args.out / previous, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    artifacts, repository, metrics = build_model_set(settings, args.out)
    build_s = time.perf_counter() - started
    served = measure_served(artifacts, repository, settings, args.out,
                            args.measurement_interval_ms)  # fmt: skip
    index_file = repository / "retrieval" / "1" / "item_index.faiss"
    summary = {
        "items": args.items,
        "users": args.users,
        "impressions": args.users * args.impressions_per_user,
        "index": settings.serving.index.model_dump(),
        "build_seconds_total": build_s,
        "index_file_mb": index_file.stat().st_size / 2**20,
        **{k: v for k, v in metrics.items() if k.startswith("ann_")},
        "served_recall_at_k": metrics.get("served_recall_at_k"),
        "retrieval_recall_at_k": metrics.get("retrieval_recall_at_k"),
        "served_c1": served,
    }
    (args.out / "catalog_scale.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
