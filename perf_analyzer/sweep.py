"""Concurrency sweeps of the `recommender` ensemble with NVIDIA's perf_analyzer.

    python -m perf_analyzer.sweep --url 127.0.0.1:8001 --protocol grpc --quick

Builds `--input-data` JSON from held-out users (real ids, real raw features, exclude lists
of varying length), runs perf_analyzer with `-f` CSV and `--percentile=99`, and writes the
CSV plus the JSON it used under the results directory. The binary ships in the
tritonclient 2.50.0 wheel; it needs libb64 (Debian) and libcudart.so.12 (PyPI
nvidia-cuda-runtime-cu12), which `perf_analyzer_environment` puts on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datagen import read_canonical
from recsys.contract import REQUEST_USER_ID, SCHEMA_FILE, TIMESTAMP
from recsys.schema import FeatureSchema
from recsys.settings import PROJECT_ROOT, load_settings
from serving.launcher import TritonServer

PERF_ANALYZER = Path(sys.executable).parent / "perf_analyzer"
QUICK_CONCURRENCY = (1, 2)
FULL_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer failed; the message carries its output."""


def perf_analyzer_environment() -> dict[str, str]:
    import nvidia.cuda_runtime

    cudart = Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(cudart), env.get("LD_LIBRARY_PATH")) if p)
    return env


@dataclass(frozen=True)
class HeldOut:
    """What the load is built from: the latest users by time and the catalog."""

    schema: FeatureSchema
    users: pd.DataFrame  # the raw user table
    user_ids: np.ndarray  # the latest `count` distinct users of the interactions
    item_ids: np.ndarray  # every catalog item


def held_out_users(artifacts: Path, count: int) -> HeldOut:
    schema = FeatureSchema.from_json((artifacts / SCHEMA_FILE).read_text())
    data = read_canonical(schema, artifacts / "data")
    interactions = data.interactions.sort_values(TIMESTAMP)
    return HeldOut(
        schema=schema,
        users=data.users,
        user_ids=interactions[schema.users.id].drop_duplicates().tail(count).to_numpy(),
        item_ids=data.items[schema.items.id].to_numpy(),
    )


def sent_feature(schema: FeatureSchema) -> str | None:
    """The user feature the load sends as an override (the first overridable categorical
    one), so requests exercise the override path as real callers do."""
    for name, feature in schema.user_overrides():
        if feature.kind in ("categorical", "hashed"):
            return name
    return None


def build_input_data(
    held_out: HeldOut,
    user_ids: np.ndarray,
    top_k: int,
    max_exclude: int,
    seed: int = 0,
) -> dict[str, list[dict[str, object]]]:
    """perf_analyzer `--input-data` entries, one per held-out user (batch dimension excluded)."""
    rng = np.random.default_rng(seed)
    table = held_out.users.set_index(held_out.schema.users.id)
    feature = sent_feature(held_out.schema)
    entries = []
    for user_id in user_ids:
        size = int(rng.integers(1, max_exclude + 1))
        exclude = rng.choice(held_out.item_ids, size=size, replace=False)
        entry: dict[str, object] = {
            REQUEST_USER_ID: [int(user_id)],
            "top_k": [top_k],
            "exclude_item_ids": {"content": exclude.astype(int).tolist(), "shape": [len(exclude)]},
        }
        value = table.loc[int(user_id), feature] if feature else None
        if feature and value is not None and pd.notna(value):
            entry[feature] = [value.item() if hasattr(value, "item") else value]
        entries.append(entry)
    # perf_analyzer needs every entry to carry the same optional inputs.
    if feature and any(feature not in e for e in entries):
        for e in entries:
            e.pop(feature, None)
    return {"data": entries}


UNSTABLE = "Failed to obtain stable measurement"
# The last resort for a level that never settles: count-based windows judged with a
# tolerance no noise exceeds, so perf_analyzer reports the last windows; the row is marked.
ACCEPT_ANY = 100_000


@dataclass(frozen=True)
class Attempt:
    """How one level was measured: `status` stable | unstable | failed."""

    level: str  # e.g. "concurrency 4" or "rate 25"
    status: str
    how: str  # the measurement mode that produced the row (or the last one tried)
    note: str = ""  # perf_analyzer's complaint, for unstable and failed levels


@dataclass(frozen=True)
class SweepResult:
    csv_path: Path
    rows: list[dict[str, str]]
    stdout: str = ""
    stdout_by_level: tuple[str, ...] = ()
    attempts: tuple[Attempt, ...] = ()


def _command(
    url: str, protocol: str, input_data: Path, out_csv: Path, load_args: list[str], model: str,
    measurement: list[str],
) -> list[str]:  # fmt: skip
    return [
        str(PERF_ANALYZER), "-m", model, "-u", url, "-i", protocol,
        "--input-data", str(input_data), *load_args, "--percentile=99", *measurement,
        "--verbose-csv", "-f", str(out_csv),
    ]  # fmt: skip


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "failed" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def measurement_plans(
    interval_ms: int, stability: int, concurrency: int
) -> list[tuple[str, list[str]]]:
    """Measurement modes tried in order until one settles: the requested time windows,
    windows twice as long, count-based windows (long enough at any throughput), and last
    the same count windows accepting any spread (that row is marked unstable)."""
    count = max(50, 20 * concurrency)
    counted = ["--measurement-mode=count_windows", f"--measurement-request-count={count}"]
    return [
        (f"time windows {interval_ms} ms",
         [f"--measurement-interval={interval_ms}", f"--stability-percentage={stability}",
          "--max-trials=10"]),
        (f"time windows {2 * interval_ms} ms",
         [f"--measurement-interval={2 * interval_ms}", f"--stability-percentage={stability}",
          "--max-trials=10"]),
        (f"count windows of {count} requests",
         [*counted, f"--stability-percentage={stability}", "--max-trials=10"]),
        (f"count windows of {count} requests, any spread",
         [*counted, f"--stability-percentage={ACCEPT_ANY}", "--max-trials=3"]),
    ]  # fmt: skip


def run_perf_analyzer(
    url: str,
    protocol: str,
    input_data: Path,
    out_csv: Path,
    load_args: list[str],
    measurement_interval_ms: int,
    model: str = "recommender",
    stability_percentage: int = 25,
    level: str = "",
    error_retries: int = 2,
) -> SweepResult:
    """One load level, measured until perf_analyzer settles (see `measurement_plans`). A
    level that never settles is measured once more with count windows and any spread,
    and its row is marked unstable; a level whose requests keep failing (more than
    `error_retries` runs) gives a row marked failed. Neither stops the sweep; `note` keeps
    what each retried run reported."""
    if not PERF_ANALYZER.exists():
        raise PerfAnalyzerError(f"perf_analyzer not found at {PERF_ANALYZER}: run `make setup`")
    concurrency = next((int(a.split("=")[1].split(":")[0]) for a in load_args
                        if a.startswith("--concurrency-range=")), 1)  # fmt: skip
    plans = measurement_plans(measurement_interval_ms, stability_percentage, concurrency)
    notes: list[str] = []
    index, errors = 0, 0
    while index < len(plans):
        how, measurement = plans[index]
        command = _command(url, protocol, input_data, out_csv, load_args, model, measurement)
        out_csv.unlink(missing_ok=True)  # never read an earlier attempt's rows
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  env=perf_analyzer_environment(), timeout=600)  # fmt: skip
        except subprocess.TimeoutExpired:
            return _failed(out_csv, load_args, level, how, "perf_analyzer ran over 600 s")
        output = done.stdout + done.stderr
        if done.returncode == 0 and out_csv.exists():
            with out_csv.open() as handle:
                rows = list(csv.DictReader(handle))
            if rows:
                status = "unstable" if index == len(plans) - 1 else "stable"
                for row in rows:
                    row["Measurement"] = status
                attempt = Attempt(level, status, how, "; ".join(notes))
                return SweepResult(out_csv, rows, done.stdout, attempts=(attempt,))
        if UNSTABLE in output:
            notes.append(f"{how}: not stable")
            index += 1
            continue
        # perf_analyzer stops at the first failed request: a rare one (a queue timeout
        # while the shared machine stalls) is retried; one that keeps coming fails the level.
        errors += 1
        notes.append(f"{how}: {_last_error(output)}")
        if errors > error_retries:
            return _failed(out_csv, load_args, level, how, "; ".join(notes), done.stdout)
    # Even the widest tolerance was refused (p99 moved by more than ACCEPT_ANY % between
    # windows): a marked row without figures, not an end to the sweep.
    return _failed(out_csv, load_args, level, plans[-1][0], "; ".join(notes), status="unstable")


def _failed(
    out_csv: Path,
    load_args: list[str],
    level: str,
    how: str,
    note: str,
    stdout: str = "",
    status: str = "failed",
) -> SweepResult:
    row = {"Measurement": status}
    for arg in load_args:
        if arg.startswith("--concurrency-range="):
            row["Concurrency"] = arg.split("=")[1].split(":")[0]
        elif arg.startswith("--request-rate-range="):
            row["Request Rate"] = arg.split("=")[1].split(":")[0]
    return SweepResult(out_csv, [row], stdout, attempts=(Attempt(level, status, how, note),))


def run_sweep(
    url: str,
    protocol: str,
    input_data: Path,
    out_csv: Path,
    concurrency: tuple[int, ...],
    measurement_interval_ms: int,
    model: str = "recommender",
    stability_percentage: int = 25,
) -> SweepResult:
    """A concurrency sweep, one perf_analyzer run per level; unstable or failed levels are
    marked in the rows' `Measurement` column and in `attempts`, never raised."""
    rows: list[dict[str, str]] = []
    stdout = []
    attempts = []
    for level in concurrency:
        part = out_csv.with_suffix(f".c{level}.csv")
        result = run_perf_analyzer(
            url, protocol, input_data, part, [f"--concurrency-range={level}:{level}"],
            measurement_interval_ms, model, stability_percentage, f"{model} c={level}",
        )  # fmt: skip
        rows.extend(result.rows)
        stdout.append(result.stdout)
        attempts.extend(result.attempts)
        part.unlink(missing_ok=True)
    _write_rows(out_csv, rows)
    return SweepResult(out_csv, rows, "\n".join(stdout), tuple(stdout), tuple(attempts))


def run_request_rates(
    url: str,
    protocol: str,
    input_data: Path,
    out_csv: Path,
    rates: tuple[float, ...],
    measurement_interval_ms: int,
    stability_percentage: int = 25,
) -> SweepResult:
    """Open-loop Poisson arrivals at each rate (requests/s), as production traffic arrives."""
    rows: list[dict[str, str]] = []
    attempts = []
    for rate in rates:
        part = out_csv.with_suffix(f".r{rate:g}.csv")
        result = run_perf_analyzer(
            url, protocol, input_data, part,
            [f"--request-rate-range={rate:g}:{rate:g}", "--request-distribution=poisson"],
            measurement_interval_ms, stability_percentage=stability_percentage,
            level=f"rate {rate:g}/s",
        )  # fmt: skip
        rows.extend(result.rows)
        attempts.extend(result.attempts)
        part.unlink(missing_ok=True)
    _write_rows(out_csv, rows)
    return SweepResult(out_csv, rows, attempts=tuple(attempts))


def row_summary(row: dict[str, str]) -> str:
    """One concurrency level's row as a line for the terminal."""
    if "Inferences/Second" not in row:
        return f"concurrency {row['Concurrency']:>3}: {row['Measurement']}, no figures"
    return (
        f"concurrency {row['Concurrency']:>3}: {float(row['Inferences/Second']):8.1f} infer/s"
        f"  p50 {int(row['p50 latency']) / 1000:7.1f} ms"
        f"  p99 {int(row['p99 latency']) / 1000:7.1f} ms  ({row['Measurement']})"
    )


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url", default=None,
        help="host:port of a running server; without it, one is started on model_repository/",
    )  # fmt: skip
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "artifacts")
    parser.add_argument("--results", type=Path, default=PROJECT_ROOT / "results" / "perf")
    parser.add_argument("--quick", action="store_true", help="concurrency 1,2 with short windows")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    held_out = held_out_users(args.artifacts, 200)
    args.results.mkdir(parents=True, exist_ok=True)
    input_path = args.results / "input_data.json"
    entries = build_input_data(held_out, held_out.user_ids, args.top_k, max_exclude=20)
    input_path.write_text(json.dumps(entries))
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            settings = load_settings(args.config)
            server = stack.enter_context(
                TritonServer(PROJECT_ROOT / "model_repository", settings.server,
                             args.results / "tritonserver.log")
            )  # fmt: skip
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
        result = run_sweep(
            url, args.protocol, input_path, args.results / f"sweep_{args.protocol}.csv",
            QUICK_CONCURRENCY if args.quick else FULL_CONCURRENCY,
            2000 if args.quick else 5000,
            stability_percentage=60 if args.quick else 25,
        )  # fmt: skip
    for row in result.rows:
        print(row_summary(row))
    for attempt in result.attempts:
        if attempt.status != "stable":
            print(f"{attempt.level}: {attempt.status} ({attempt.how}): {attempt.note}")
    print(f"CSV: {result.csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
