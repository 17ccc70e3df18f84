"""Serving-configuration sweep: dynamic-batching delay and instance counts, side by side.

    python -m perf_analyzer.tuning [--quick]        (make perf-tuning)

Each variant is the same trained model set written to its own repository with different
`serving:` settings, served alone, and measured with perf_analyzer at the same
concurrencies; results go to results/perf/tuning-<run>/tuning.csv and tuning.md.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from perf_analyzer.report_tables import markdown, perf_table
from perf_analyzer.sweep import build_input_data, held_out_users, run_sweep
from recsys.settings import PROJECT_ROOT, load_settings
from serving.launcher import TritonServer
from serving.repository import build_model_repository

VARIANTS: dict[str, dict[str, int]] = {
    "no batching delay, 1 instance": {"max_queue_delay_microseconds": 0, "instance_count": 1},
    "500 us delay, 1 instance": {"max_queue_delay_microseconds": 500, "instance_count": 1},
    "2 ms delay, 1 instance": {"max_queue_delay_microseconds": 2000, "instance_count": 1},
    "500 us delay, 2 instances": {"max_queue_delay_microseconds": 500, "instance_count": 2},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "artifacts")
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    concurrency = (1, 8) if args.quick else (1, 4, 16, 32)
    run_name = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = PROJECT_ROOT / "results" / "perf" / f"tuning-{run_name}"
    out.mkdir(parents=True, exist_ok=True)
    held_out = held_out_users(args.artifacts, 300)
    entries = build_input_data(held_out, held_out.user_ids, settings.serving.default_top_k,
                               max_exclude=20)  # fmt: skip
    input_path = out / "input_data.json"
    input_path.write_text(json.dumps(entries))
    tables = []
    for label, overrides in VARIANTS.items():
        print(f"==> {label}", flush=True)
        serving = settings.serving.model_copy(update=overrides)
        # ASCII only: the Python backend stub cannot stat non-ASCII model paths.
        repository = out / "repositories" / re.sub(r"[^a-z0-9]+", "_", label.lower())
        build_model_repository(args.artifacts, repository, serving, version=1)
        with TritonServer(repository, settings.server, repository / "tritonserver.log") as server:
            result = run_sweep(server.grpc_url, "grpc", input_path, repository / "sweep.csv",
                               concurrency, 2000 if args.quick else 5000,
                               stability_percentage=60 if args.quick else 25)  # fmt: skip
        tables.append(perf_table(result.rows, label))
    table = pd.concat(tables)
    table.to_csv(out / "tuning.csv", index=False)
    (out / "tuning.md").write_text(f"# Serving configuration sweep ({run_name})\n\n"
                                   f"{markdown(table)}\n")  # fmt: skip
    print(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
