"""Command line for the recommender ensemble.

python -m client.cli recommend --user-id 100123 --top-k 10 --exclude 500001,500002
python -m client.cli --protocol http --url 127.0.0.1:8000 recommend --user-id 7 \
    --feature NAME=VALUE [--feature ...]
python -m client.cli versions
"""

from __future__ import annotations

import argparse
import json
import sys

from client.recommender_client import FeatureValue, RecommenderClient, RecommenderClientError
from recsys.settings import load_settings


def _feature(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--feature takes NAME=VALUE, got {text!r}")
    return name.strip(), value


def _ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"takes comma-separated integers: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    server = load_settings().server
    parser = argparse.ArgumentParser(
        prog="recsys-client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--url",
        default=None,
        help=f"host:port (default {server.bind_address}:{server.grpc_port} for "
        f"gRPC, :{server.http_port} for HTTP)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt")
    parser.add_argument(
        "--retries", type=int, default=3, help="extra attempts when the server is unavailable"
    )
    parser.add_argument(
        "--retry-deadline",
        type=float,
        default=None,
        help="stop retrying this many seconds after the first attempt",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    commands = parser.add_subparsers(dest="command", required=True)
    recommend = commands.add_parser("recommend", help="top-k items for one user")
    recommend.add_argument("--user-id", type=int, required=True)
    recommend.add_argument("--top-k", type=int, default=10)
    recommend.add_argument("--exclude", type=_ids, default=[], help="item ids, comma-separated")
    recommend.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sample by softmax(score/T) instead of sorting",
    )
    recommend.add_argument(
        "--history",
        type=_ids,
        default=[],
        help="item ids the user just consumed (in-session, oldest first), comma-separated: "
        "they personalise the answer and are not recommended again",
    )
    recommend.add_argument(
        "--include-seen",
        action="store_true",
        help="let items the user already consumed come back (filtered by default)",
    )
    recommend.add_argument(
        "--feature",
        action="append",
        default=[],
        type=_feature,
        metavar="NAME=VALUE",
        help="override a user feature (repeatable); the server's metadata says which it "
        "takes and their types; a list feature takes comma-separated tokens",
    )
    commands.add_parser("versions", help="model versions the ensemble is pinned to")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = load_settings().server
    port = server.grpc_port if args.protocol == "grpc" else server.http_port
    url = args.url or f"{server.bind_address}:{port}"
    try:
        with RecommenderClient(
            url,
            args.protocol,
            timeout_s=args.timeout,
            retries=args.retries,
            retry_deadline_s=args.retry_deadline,
        ) as client:
            if args.command == "versions":
                print(json.dumps(client.model_versions(), indent=2))
                return 0
            known = client.feature_inputs() if args.feature else {}
            features: dict[str, FeatureValue] = {}
            for name, value in args.feature:
                if name in known and known[name].is_list:
                    features[name] = [t for t in value.split(",") if t]
                else:
                    features[name] = value
            result = client.recommend(
                args.user_id, args.top_k, args.exclude, features, args.temperature,
                False if args.include_seen else None, args.history,
            )  # fmt: skip
    except (RecommenderClientError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.__dict__))
    else:
        print(f"user {result.user_id} (model set version {result.model_version}):")
        for rank, (item, score) in enumerate(zip(result.item_ids, result.scores, strict=True), 1):
            print(f"  {rank:>3}. item {item}  score {score:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
