"""Randomly malformed requests against the real server: it stays healthy, and every answer
is either a result that makes sense or a clear client error (never INTERNAL, never a hang).

Hypothesis draws which inputs to send, their dtypes, shapes and values (extreme integers,
NaN/inf, random bytes, empty and oversized batches), over gRPC and HTTP; a second test
mutates valid JSON bodies byte by byte. Runs are derandomized so CI sees the same cases.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from client.recommender_client import RecommenderClient
from serving.launcher import STUB_PROCESS_NAME, TritonServer

pytestmark = pytest.mark.server
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# name -> (datatype, per-row shape) of the ensemble's inputs, plus one it does not have.
INPUTS = {
    "user_id": ("INT64", [1]),
    "top_k": ("INT32", [1]),
    "exclude_item_ids": ("INT64", [-1]),
    "age": ("FP32", [1]),
    "country": ("BYTES", [1]),
    "device": ("BYTES", [1]),
    "zipcode": ("BYTES", [1]),
    "temperature": ("FP32", [1]),
    "unexpected": ("INT32", [1]),
}
NUMPY_TYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP64": np.float64}
CLIENT_ERRORS = {"StatusCode.INVALID_ARGUMENT", "400"}

# Values a well-behaved caller might send, per input ...
VALID: dict[str, st.SearchStrategy[Any]] = {
    "user_id": st.integers(-10, 10**7),
    "top_k": st.integers(1, 30),
    "exclude_item_ids": st.integers(-1, 600_000),
    "age": st.floats(0, 150, width=32),
    "country": st.text(max_size=20).map(str.encode),
    "device": st.sampled_from([b"web", b"ios", b"android", b""]),
    "zipcode": st.text("0123456789", max_size=8).map(str.encode),
    "temperature": st.floats(0, 5, width=32),
    "unexpected": st.integers(0, 5),
}
# ... and the hostile ones a mutated input draws from.
HOSTILE_INTS = st.sampled_from(
    [-(2**63), 2**63 - 1, -(2**31), 2**31 - 1, -1, 0, 101, 1000, 1001, 10**12]
)
HOSTILE_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
HOSTILE_BYTES = st.one_of(st.binary(max_size=40), st.just(b"9" * 300))
MUTATIONS = ("value", "dtype", "shape", "drop")


@st.composite
def tensor(
    draw: st.DrawFn, name: str, batch: int, mutation: str | None
) -> tuple[str, np.ndarray, str] | None:
    datatype, dims = INPUTS[name]
    if mutation == "drop":
        return None
    if mutation == "dtype":
        datatype = draw(st.sampled_from(["INT64", "INT32", "FP32", "FP64", "BYTES"]))
    width = draw(st.sampled_from([0, 1, 5])) if dims == [-1] else 1
    if mutation == "shape":
        width = draw(st.sampled_from([0, 2, 1001] if dims == [-1] else [0, 2]))
    count = batch * width
    if mutation == "value":
        source = (HOSTILE_BYTES if datatype == "BYTES"
                  else HOSTILE_FLOATS if datatype.startswith("FP") else HOSTILE_INTS)  # fmt: skip
    elif INPUTS[name][0] != datatype:  # a wrong dtype: any value of that type will do
        source = (VALID["country"] if datatype == "BYTES"
                  else VALID["age"] if datatype.startswith("FP") else VALID["top_k"])  # fmt: skip
    else:
        source = VALID[name]
    values = draw(st.lists(source, min_size=count, max_size=count))
    if datatype == "BYTES":
        array = np.array(values, dtype=np.object_)
    else:
        numpy_type = NUMPY_TYPES[datatype]
        if datatype.startswith("INT"):
            info = np.iinfo(numpy_type)
            values = [min(max(int(v), info.min), info.max) for v in values]
        array = np.array(values, dtype=numpy_type)
    return name, array.reshape(batch, width), datatype


@st.composite
def malformed_request(draw: st.DrawFn) -> list[tuple[str, np.ndarray, str]]:
    """A valid request with up to two inputs broken (bad value, dtype, shape, or missing),
    now and then an unexpected extra input, and an odd batch size now and then."""
    batch = draw(st.sampled_from([1, 1, 1, 1, 2, 3, 8, 64, 65, 0]))
    optional = sorted(draw(st.sets(st.sampled_from(list(INPUTS)[2:-1]))))
    names = ["user_id", "top_k", *optional]
    if draw(st.integers(0, 19)) == 0:
        names.append("unexpected")
    broken = draw(st.sets(st.sampled_from(names), max_size=2))
    mutations = {name: draw(st.sampled_from(MUTATIONS)) for name in sorted(broken)}
    tensors = [draw(tensor(name, batch, mutations.get(name))) for name in names]
    return [t for t in tensors if t is not None]


def sent(inputs: list[tuple[str, np.ndarray, str]], name: str, datatype: str) -> np.ndarray | None:
    """The 2-D array sent as input `name` if it went with the contract's datatype, else None
    (then the oracle cannot tell what the server was asked and checks less)."""
    for input_name, array, input_type in inputs:
        if input_name == name and input_type == datatype and array.ndim == 2:
            return array
    return None


def check_result(result: Any, inputs: list[tuple[str, np.ndarray, str]]) -> None:
    """The oracle for every successful answer: well-formed rows of catalog-like ids with
    probabilities, and per row (when the request makes it checkable) at most top_k items,
    none of them excluded, none twice."""
    item_ids, scores = result.as_numpy("item_ids"), result.as_numpy("scores")
    batch = len(inputs[0][1])
    assert item_ids.shape[0] == scores.shape[0] == batch
    real = item_ids >= 0
    assert np.all(real | (item_ids == -1))
    assert np.all(np.isfinite(scores[real])) and np.all((scores[real] >= 0) & (scores[real] <= 1))
    assert np.all(result.as_numpy("model_version") >= 1)
    top_k = sent(inputs, "top_k", "INT32")
    exclude = sent(inputs, "exclude_item_ids", "INT64")
    for row in range(batch):
        items = item_ids[row][real[row]].tolist()
        # Padding (-1) only after the real items: the client reads the row up to the first -1.
        assert not np.any(real[row][len(items) :]), item_ids[row]
        assert len(set(items)) == len(items), f"row {row} repeats an item: {items}"
        if top_k is not None and top_k.shape == (batch, 1):
            assert len(items) <= int(top_k[row, 0]), (len(items), int(top_k[row, 0]))
        if exclude is not None and exclude.shape[0] == batch:
            excluded = set(exclude[row][exclude[row] >= 0].tolist())  # negative ids: padding
            assert not excluded & set(items), f"row {row} returned excluded {excluded & set(items)}"


def check_json_result(body: bytes, answer: dict[str, Any]) -> None:
    """The same oracle for a JSON answer, when the (mutated) body still parses and names one
    row's top_k plainly; a body only Triton's parser accepts is checked for shape only."""
    outputs = {output["name"]: output for output in answer["outputs"]}
    item_ids = np.asarray(outputs["item_ids"]["data"], np.int64).reshape(
        outputs["item_ids"]["shape"]
    )
    items = item_ids[item_ids >= 0].tolist()
    assert len(set(items)) == len(items), f"an item twice: {items}"
    try:
        request = json.loads(body)
        top_k = [i for i in request["inputs"] if i["name"] == "top_k"]
        (value,) = top_k[0]["data"] if len(top_k) == 1 else [None]
    except (ValueError, TypeError, KeyError, IndexError):
        return
    # Above int32 Triton narrows the value (docs/errors.md): not checkable here.
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
        assert item_ids.shape[0] == 1 and len(items) <= value, (items, value)


class FakeResult:
    """What check_result reads of an InferResult."""

    def __init__(self, item_ids: list[list[int]]) -> None:
        ids = np.array(item_ids, np.int64)
        self.outputs = {
            "item_ids": ids,
            "scores": np.where(ids >= 0, 0.5, np.nan).astype(np.float32),
            "model_version": np.ones((len(ids), 1), np.int64),
        }

    def as_numpy(self, name: str) -> np.ndarray:
        return self.outputs[name]


def test_the_oracle_refuses_wrong_answers() -> None:
    """The oracle can fail: too many items, an excluded item, a repeated item, padding
    before an item; and it accepts a right answer with padding."""
    inputs = [
        ("user_id", np.array([[1], [2]], np.int64), "INT64"),
        ("top_k", np.array([[3], [2]], np.int32), "INT32"),
        ("exclude_item_ids", np.array([[7, -1], [8, 9]], np.int64), "INT64"),
    ]
    check_result(FakeResult([[1, 2, 3], [4, -1, -1]]), inputs)
    for wrong in (
        [[1, 2, 3], [4, 5, 6]],  # 3 items for top_k 2
        [[1, 7, 3], [4, -1, -1]],  # excluded item 7
        [[1, 2, 3], [9, -1, -1]],  # excluded item 9
        [[1, 2, 1], [4, -1, -1]],  # item 1 twice
        [[1, 2, 3], [-1, 4, -1]],  # padding before an item
    ):
        with pytest.raises(AssertionError):
            check_result(FakeResult(wrong), inputs)
    body = json.dumps({"inputs": [{"name": "top_k", "data": [2]}]}).encode()
    check_json_result(body, {"outputs": [{"name": "item_ids", "shape": [1, 2], "data": [4, 5]}]})
    with pytest.raises(AssertionError):
        check_json_result(
            body, {"outputs": [{"name": "item_ids", "shape": [1, 3], "data": [4, 5, 6]}]}
        )


@pytest.fixture(scope="module")
def clients(triton: TritonServer) -> Iterator[dict[str, Any]]:
    clients = {
        "grpc": grpcclient.InferenceServerClient(triton.grpc_url),
        "http": httpclient.InferenceServerClient(
            triton.http_url, connection_timeout=60, network_timeout=60
        ),
    }
    yield clients
    for client in clients.values():  # an open HTTP connection would delay server shutdown
        client.close()


@FUZZ
@given(inputs=malformed_request(), protocol=st.sampled_from(["grpc", "http"]))
def test_random_tensors_get_a_result_or_a_clear_error(
    inputs: list[tuple[str, np.ndarray, str]], protocol: str, clients: dict[str, Any]
) -> None:
    module = grpcclient if protocol == "grpc" else httpclient
    tensors = []
    for name, array, datatype in inputs:
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    kwargs = {"client_timeout": 60} if protocol == "grpc" else {}
    try:
        result = clients[protocol].infer("recommender", tensors, **kwargs)
    except InferenceServerException as exc:
        assert exc.status() in CLIENT_ERRORS, f"{exc.status()}: {exc.message()}"
        assert exc.message()
        event(f"refused: {exc.message().split(',')[0][:60]}")
        return
    check_result(result, inputs)
    event("answered")


VALID_JSON = json.dumps(
    {
        "inputs": [
            {"name": "user_id", "shape": [1, 1], "datatype": "INT64", "data": [5]},
            {"name": "top_k", "shape": [1, 1], "datatype": "INT32", "data": [5]},
            {"name": "age", "shape": [1, 1], "datatype": "FP32", "data": [40.0]},
            {"name": "country", "shape": [1, 1], "datatype": "BYTES", "data": ["country_01"]},
        ]
    }
).encode()


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(VALID_JSON) - 1), st.integers(0, 255)), min_size=1,
        max_size=4,
    ),
    cut=st.integers(1, len(VALID_JSON)),
)  # fmt: skip
def test_mutated_json_gets_a_result_or_a_clear_error(
    edits: list[tuple[int, int]], cut: int, triton: TritonServer
) -> None:
    body = bytearray(VALID_JSON[:cut] if cut % 5 == 0 else VALID_JSON)
    for position, value in edits:
        if position < len(body):
            body[position] = value
    request = urllib.request.Request(
        f"http://{triton.http_url}/v2/models/recommender/infer", data=bytes(body), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            check_json_result(bytes(body), json.loads(answer.read()))
    except urllib.error.HTTPError as exc:
        # Triton echoes a request's bytes into its error message unescaped: an input name
        # mutated into invalid UTF-8 makes the error body invalid UTF-8 (docs/errors.md).
        error = json.loads(exc.read().decode("utf-8", errors="replace")).get("error", "")
        assert error
        # Triton 2.51 answers JSON it cannot parse with 500 (docs/errors.md); anything the
        # models see is a 400. A 500 must be one of the parser's messages. Tolerated here
        # because random bytes cannot be told apart from that upstream bug
        # (triton-inference-server/server#8762); test_validation.py's strict expected
        # failures are what turn red once it is fixed.
        assert exc.code == 400 or (
            exc.code == 500 and ("parse" in error or "Unable to" in error)
        ), (exc.code, error)


def test_server_is_healthy_after_the_fuzzing(triton: TritonServer) -> None:
    assert triton.is_ready()
    assert triton.process is not None
    stubs = [
        child
        for child in psutil.Process(triton.process.pid).children()
        if child.name().startswith(STUB_PROCESS_NAME[:15])
    ]
    assert stubs and all(s.status() != psutil.STATUS_ZOMBIE for s in stubs)
    assert len(RecommenderClient(triton.grpc_url, "grpc").recommend(5, 7).item_ids) == 7
