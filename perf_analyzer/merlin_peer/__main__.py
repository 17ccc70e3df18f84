"""Export the peer, and with --measure serve and sweep it on its own (the report measures it
in the same run as the project's ensemble: `make perf-report`).

    python -m perf_analyzer.merlin_peer --artifacts artifacts --out results/merlin_peer
    python -m perf_analyzer.merlin_peer --artifacts artifacts --out results/merlin_peer \
        --measure --concurrency 1,4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from perf_analyzer.merlin_peer.build import ORDERINGS, export_merlin_peer
from perf_analyzer.merlin_peer.measure import measure_merlin_peer
from perf_analyzer.sweep import held_out_users, row_summary
from recsys.settings import PROJECT_ROOT, load_settings

# As many held-out users as the report's load cycles through.
HELD_OUT_USERS = 300


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf_analyzer.merlin_peer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "artifacts")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "merlin_peer")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--ordering", choices=ORDERINGS, default="softmax")
    parser.add_argument("--measure", action="store_true", help="serve it and run perf_analyzer")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated levels")
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--ports", default=None,
        help="HTTP,GRPC,METRICS for the peer's server (default: the configuration's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    if args.ports:
        http, grpc, metrics = (int(port) for port in args.ports.split(","))
        server = settings.server.model_copy(
            update={"http_port": http, "grpc_port": grpc, "metrics_port": metrics}
        )
        settings = settings.model_copy(update={"server": server})
    repository = export_merlin_peer(
        args.artifacts, args.out / "model_repository", settings, args.ordering
    )
    print(f"merlin-systems executor repository: {repository}")
    if not args.measure:
        return 0
    levels = tuple(int(level) for level in args.concurrency.split(","))
    user_ids = held_out_users(args.artifacts, HELD_OUT_USERS).user_ids
    result = measure_merlin_peer(
        args.artifacts, args.out, settings, levels, user_ids, args.interval_ms, args.protocol,
        repository=repository,
    )  # fmt: skip
    for row in result.rows:
        print(row_summary(row))
    print(f"CSV: {result.csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
