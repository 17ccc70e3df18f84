"""`make evaluate` end to end on real MovieLens-100k: both splits, the baselines, a real
tritonserver answering every validation user, the report and the quality targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.evaluate import main
from recsys.settings import DEFAULT_CONFIG_PATH
from tests.conftest import free_port

# Two full builds on real data plus a served pass: a few minutes on a quiet 2-core
# machine, far more on a shared one; the suite-wide per-test limit is too short for it.
pytestmark = [pytest.mark.server, pytest.mark.timeout(3000)]


@pytest.fixture(scope="module")
def evaluated(ml_100k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    config["server"] |= {"http_port": free_port(), "grpc_port": free_port(),
                         "metrics_port": free_port()}  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    out = root / "evaluation"
    code = main(["--config", str(root / "config.yaml"), "--schema", "movielens",
                 "--data-dir", str(ml_100k), "--out", str(out)])  # fmt: skip
    assert code == 0, "served answers differ from the in-process chain (see the report)"
    return out


def test_served_lists_beat_most_popular_and_als_on_real_data(evaluated: Path) -> None:
    """The issue's targets on the default (global time) split: recall@50 >= 1.2x
    most-popular with seen items filtered, and >= implicit's ALS."""
    m = json.loads((evaluated / "metrics-time.json").read_text())
    assert m["served_recall_at_k"] >= 1.2 * m["popularity_recall_at_k"], m
    assert m["served_recall_at_k"] >= m["als_recall_at_k"], m
    assert m["served_ndcg_at_k"] > m["popularity_ndcg_at_k"], m
    # Cold users (most of MovieLens' late raters) are served better than by popularity too.
    assert m["served_recall_at_k_cold"] > m["popularity_recall_at_k_cold"], m
    assert m["ranking_auc"] > m["ranking_auc_popularity"], m


def test_the_report_says_what_the_endpoint_answered(evaluated: Path) -> None:
    report = (evaluated / "report.md").read_text()
    m = json.loads((evaluated / "metrics-time.json").read_text())
    users = m["validation_users"]
    assert f"{users}/{users} answers equal the in-process chain's" in report
    assert "## time split" in report and "## leave_last_n split" in report
    assert "missed by" in report or report.count(": met") == 3
    assert (evaluated / "recall.png").stat().st_size > 10_000


def test_leave_last_n_split_has_only_warm_users(evaluated: Path) -> None:
    m = json.loads((evaluated / "metrics-leave_last_n.json").read_text())
    assert m["validation_users_warm"] == m["validation_users"] > 500
    assert m["served_recall_at_k"] > m["popularity_recall_at_k"], m


def test_an_unknown_schema_without_data_is_refused(tmp_path: Path) -> None:
    assert main(["--schema", "aliccp", "--out", str(tmp_path)]) == 2
