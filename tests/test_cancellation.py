"""Requests whose client gave up are not computed: not after their deadline, not once the
client cancelled them.

A request is made to wait: the retrieval stage's dynamic batcher holds a lone request for
HOLD_S (max_queue_delay, waiting for a batch that never fills), while the client gives up
after GIVE_UP_S. Triton's per-model statistics then tell which stages computed it.

- The client's deadline travels with the request (Triton's `timeout` parameter, which
  RecommenderClient sets to its own timeout): the queue it waits in refuses it when the
  deadline passes, and no stage computes it.
- A cancelled gRPC call (the client went away; a gRPC deadline is the same to the server):
  Triton checks cancellation between ensemble steps, so no later stage computes it. The
  stage it was queued in still does: Triton 2.51 does not pass an ensemble's cancellation
  on to the step already queued (triton-inference-server/server#6739) - a strict xfail, so
  that an upstream fix turns it red on purpose.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client.recommender_client import RecommenderClient, RecommenderClientError
from recsys.contract import ENSEMBLE_NAME, STAGE_MODEL_NAMES
from serving.launcher import TritonServer
from serving.repository import read_config, write_config
from tests.conftest import TrainedSet, free_port

pytestmark = pytest.mark.server

HELD_STAGE = "retrieval"
HOLD_S = 3.0
GIVE_UP_S = 0.5
LATER_STAGES = STAGE_MODEL_NAMES[STAGE_MODEL_NAMES.index(HELD_STAGE) + 1 :]
Counts = dict[str, tuple[int, int, int]]  # model -> (successes, failures, executions)


@pytest.fixture(scope="module")
def holding_server(
    trained: TrainedSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """The trained repository, with HELD_STAGE holding each lone request for HOLD_S."""
    root = tmp_path_factory.mktemp("cancellation")
    repository = root / "model_repository"
    shutil.copytree(trained.repository, repository)
    config = read_config(repository / HELD_STAGE)
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = int(HOLD_S * 1_000_000)
    batching.preferred_batch_size[:] = [config.max_batch_size]
    # The queue policy's own guard would refuse the held request first: keep it out of the way.
    batching.default_queue_policy.default_timeout_microseconds = int(10 * HOLD_S * 1_000_000)
    write_config(config, repository / HELD_STAGE)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    settings = trained.settings.server.model_copy(update=ports)
    with TritonServer(repository, settings, root / "tritonserver.log") as server:
        yield server


def counts(server: TritonServer) -> Counts:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/stats", timeout=30) as r:
        stats = json.loads(r.read())["model_stats"]
    return {
        s["name"]: (
            int(s["inference_stats"]["success"]["count"]),
            int(s["inference_stats"]["fail"]["count"]),
            int(s["execution_count"]),
        )
        for s in stats
    }


def settled_counts(server: TritonServer, before: Counts) -> Counts:
    """Counts once the held batch was released and the ensemble recorded the failure."""
    time.sleep(HOLD_S + 1.0)
    deadline = time.monotonic() + 30
    while (after := counts(server))[ENSEMBLE_NAME][1] == before[ENSEMBLE_NAME][1]:
        assert time.monotonic() < deadline, "the ensemble never recorded the failed request"
        time.sleep(0.2)
    return after


def user_id(trained: TrainedSet) -> int:
    return int(trained.data.valid["user_id"].iloc[0])


def test_a_request_past_its_deadline_is_computed_by_no_stage(
    holding_server: TritonServer, trained: TrainedSet
) -> None:
    before = counts(holding_server)
    started = time.monotonic()
    with (
        RecommenderClient(holding_server.grpc_url, "grpc", timeout_s=GIVE_UP_S, retries=0) as c,
        pytest.raises(RecommenderClientError),
    ):
        c.recommend(user_id(trained), 5)
    assert time.monotonic() - started < HOLD_S, "the client waited for the held request"
    after = settled_counts(holding_server, before)
    # It reached the server (the first stage computed it) and was refused where it waited.
    assert after[STAGE_MODEL_NAMES[0]][0] == before[STAGE_MODEL_NAMES[0]][0] + 1
    assert after[HELD_STAGE][0] == before[HELD_STAGE][0], "computed after its deadline"
    assert after[HELD_STAGE][1] == before[HELD_STAGE][1] + 1
    for stage in LATER_STAGES:
        assert after[stage][2] == before[stage][2], f"{stage} computed an expired request"


def counts_around_a_cancelled_request(server: TritonServer, user: int) -> tuple[Counts, Counts]:
    """Counts before and after a raw gRPC call without Triton's `timeout` parameter,
    abandoned after GIVE_UP_S."""
    before = counts(server)
    inputs = [grpcclient.InferInput("user_id", [1, 1], "INT64"),
              grpcclient.InferInput("top_k", [1, 1], "INT32")]  # fmt: skip
    inputs[0].set_data_from_numpy(np.array([[user]], np.int64))
    inputs[1].set_data_from_numpy(np.array([[5]], np.int32))
    with (
        grpcclient.InferenceServerClient(server.grpc_url) as client,
        pytest.raises(InferenceServerException, match="DEADLINE_EXCEEDED|Deadline"),
    ):
        client.infer(ENSEMBLE_NAME, inputs, client_timeout=GIVE_UP_S)
    return before, settled_counts(server, before)


def test_a_cancelled_request_reaches_no_later_stage(
    holding_server: TritonServer, trained: TrainedSet
) -> None:
    before, after = counts_around_a_cancelled_request(holding_server, user_id(trained))
    for stage in LATER_STAGES:
        assert after[stage][2] == before[stage][2], f"{stage} computed a cancelled request"


@pytest.mark.xfail(
    strict=True,
    reason="Triton 2.51 does not cancel an ensemble step already queued when the ensemble "
    "request is cancelled (triton-inference-server/server#6739): the step computes it",
)
def test_a_cancelled_request_is_not_computed_by_the_stage_it_waits_in(
    holding_server: TritonServer, trained: TrainedSet
) -> None:
    before, after = counts_around_a_cancelled_request(holding_server, user_id(trained))
    assert after[HELD_STAGE][0] == before[HELD_STAGE][0], "the held stage computed it"
