"""The main job end to end on the small default data set.

generate data -> fit workflows -> train both models -> build the model repository ->
start tritonserver -> query over gRPC and HTTP -> print recommendations -> stop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from client.recommender_client import RecommendationRequest, RecommenderClient
from recsys.build import (
    DEFAULT_ARTIFACTS,
    DEFAULT_REPOSITORY,
    build_artifacts,
    format_metrics,
    step,
)
from recsys.settings import load_settings
from serving.launcher import TritonServer
from serving.repository import build_model_repository


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--users", type=int, default=3, help="how many users to show")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    settings = load_settings(args.config)

    metrics = build_artifacts(settings, args.artifacts)
    print("offline metrics on the validation split (model vs popularity baseline):")
    print(format_metrics(metrics))
    with step(f"writing model repository {args.repository}"):
        build_model_repository(args.artifacts, args.repository, settings.serving, version=1)

    interactions = pd.read_parquet(args.artifacts / "data" / "interactions.parquet")
    user_ids = interactions.sort_values("timestamp")["user_id"].drop_duplicates().tail(args.users)
    requests = [RecommendationRequest(int(u), args.top_k) for u in user_ids]
    # One unseen user: served through the workflow's out-of-vocabulary path.
    requests.append(RecommendationRequest(1, args.top_k, features={"country": "country_03"}))

    server = TritonServer(args.repository, settings.server, args.artifacts / "tritonserver.log")
    with step("starting tritonserver (explicit model control, loading 6 models)"):
        server.start()
    try:
        print(f"    HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}")
        grpc = RecommenderClient(server.grpc_url, "grpc")
        http = RecommenderClient(server.http_url, "http")
        versions = grpc.model_versions()
        print(
            "ensemble 'recommender' steps: "
            + ", ".join(f"{name} v{version}" for name, version in versions.items())
        )
        mismatches = 0
        for request in requests:
            over_grpc = grpc.recommend_batch([request])[0]
            over_http = http.recommend_batch([request])[0]
            same = over_grpc.item_ids == over_http.item_ids
            mismatches += not same
            label = "unseen user" if request.user_id == 1 else "user"
            print(
                f"\n{label} {request.user_id}: top-{args.top_k} over gRPC "
                f"(model set v{over_grpc.model_version}); HTTP "
                f"{'identical' if same else 'DIFFERENT'}"
            )
            for rank, (item, score) in enumerate(
                zip(over_grpc.item_ids, over_grpc.scores, strict=True), 1
            ):
                print(f"  {rank}. item {item}  score {score:.4f}")
        grpc.close()
        http.close()
    finally:
        server.stop()
    print("\ntritonserver stopped.")
    if mismatches:
        print(f"error: {mismatches} users got different answers over gRPC and HTTP")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
