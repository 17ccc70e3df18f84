"""The main job end to end: on the small synthetic default, or on your data.

    python -m pipeline.demo [--schema NAME] [--data-dir DIR]     (make demo [SCHEMA= DATA_DIR=])

data -> fit workflows -> train both models -> build the model repository ->
start tritonserver -> query over gRPC and HTTP -> print recommendations -> stop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from client.recommender_client import RecommendationRequest, RecommenderClient
from datagen import read_canonical
from pipeline.build import (
    DEFAULT_ARTIFACTS,
    DEFAULT_REPOSITORY,
    artifacts_schema,
    build_artifacts,
    format_metrics,
    step,
)
from recsys.contract import MODEL_LOAD_ORDER, TIMESTAMP
from recsys.schema import FeatureSchema
from recsys.settings import load_settings
from serving.launcher import TritonServer
from serving.repository import build_model_repository


def _one_feature(schema: FeatureSchema, users: pd.DataFrame) -> dict[str, float | str | int]:
    # A category says more in a demo than a number: categorical features first.
    ranked = sorted(schema.user_overrides(), key=lambda nf: nf[1].kind == "continuous")
    for name, feature in ranked:
        if feature.kind == "multi_hot":
            continue
        known = users[name].dropna()
        if len(known):
            value = known.mode().iloc[0]
            return {name: value.item() if hasattr(value, "item") else value}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--schema", default=None, help="feature schema name or path")
    parser.add_argument("--data-dir", type=Path, default=None, help="your data (schema layout)")
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--users", type=int, default=3, help="how many users to show")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    settings = load_settings(args.config, args.schema)

    metrics = build_artifacts(settings, args.artifacts, args.data_dir)
    print("offline metrics on the validation split (served lists vs most-popular and ALS):")
    print(format_metrics(metrics))
    with step(f"writing model repository {args.repository}"):
        build_model_repository(args.artifacts, args.repository, settings.serving, version=1)

    schema = artifacts_schema(args.artifacts)
    data = read_canonical(schema, args.artifacts / "data")
    latest = data.interactions.sort_values(TIMESTAMP)[schema.users.id].drop_duplicates()
    requests = [RecommendationRequest(int(u), args.top_k) for u in latest.tail(args.users)]
    # One unseen user: served through the workflow's out-of-vocabulary path, personalised
    # by one feature the request sends (the first overridable one with a known value).
    unseen = int(data.users[schema.users.id].max()) + 1
    requests.append(
        RecommendationRequest(unseen, args.top_k, features=_one_feature(schema, data.users))
    )

    server = TritonServer(
        args.repository, settings.server, args.artifacts / "tritonserver.log", config=args.config
    )
    with step(f"starting tritonserver (explicit model control, {len(MODEL_LOAD_ORDER)} models)"):
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
            label = "unseen user" if request.user_id == unseen else "user"
            sent = f" with {request.features}" if request.features else ""
            print(
                f"\n{label} {request.user_id}{sent}: top-{args.top_k} over gRPC "
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
