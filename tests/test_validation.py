"""Bad input at the edge of the ensemble, over gRPC and HTTP, against the real server.

Every case of docs/errors.md's table: the answer is INVALID_ARGUMENT (gRPC) / 400 (HTTP)
naming the input and the problem, and the next valid request is answered correctly.
Also: one bad request in a dynamic batch does not fail the good ones batched with it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from client.recommender_client import (
    InvalidRequestError,
    RecommendationRequest,
    RecommenderClient,
)
from serving.launcher import TritonServer
from tests.conftest import TrainedSet

pytestmark = pytest.mark.server
PROTOCOLS = ("grpc", "http")
INVALID_STATUS = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}
MODULES: dict[str, Any] = {"grpc": grpcclient, "http": httpclient}

Tensor = tuple[str, np.ndarray, str]


@dataclass(frozen=True)
class Case:
    name: str
    inputs: Callable[[], list[Tensor]]
    expected: tuple[str, ...]  # substrings of the error message


def base(user: int = 5, top_k: int = 5, rows: int = 1) -> list[Tensor]:
    return [
        ("user_id", np.full((rows, 1), user, np.int64), "INT64"),
        ("top_k", np.full((rows, 1), top_k, np.int32), "INT32"),
    ]


def with_input(name: str, array: np.ndarray, datatype: str) -> Callable[[], list[Tensor]]:
    return lambda: [*base(), (name, array, datatype)]


CASES = [
    Case("missing required input", lambda: base()[:1], ("missing required input(s) ['top_k']",)),
    Case(
        "wrong dtype",
        lambda: [("user_id", np.array([[5.0]], np.float32), "FP32"), base()[1]],
        ("input 'user_id' data-type is 'FP32'", "expects 'INT64'"),
    ),
    Case(
        "string where a number is expected",
        lambda: [("user_id", np.array([[b"5"]], np.object_), "BYTES"), base()[1]],
        ("input 'user_id' data-type is 'BYTES'",),
    ),
    Case(
        "wrong shape",
        lambda: [("user_id", np.array([[5, 6]], np.int64), "INT64"), base()[1]],
        ("unexpected shape for input 'user_id'", "Expected [-1,1], got [1,2]"),
    ),
    Case(
        "batch sizes differ between inputs",
        lambda: [base(rows=2)[0], base()[1]],
        ("input 'user_id' batch size does not match",),
    ),
    Case("empty batch", lambda: base(rows=0), ("input byte size mismatch for input",)),
    Case("batch above max_batch_size", lambda: base(rows=65), ("batch-size must be <= 64",)),
    Case("top_k 0", lambda: base(top_k=0), ("top_k must be between 1 and 100", "got 0")),
    Case("top_k negative", lambda: base(top_k=-3), ("top_k must be between 1 and 100",)),
    Case("top_k above candidates", lambda: base(top_k=101), ("top_k must be between 1 and 100",)),
    Case(
        "exclude list too long",
        with_input("exclude_item_ids", np.zeros((1, 1001), np.int64), "INT64"),
        ("input 'exclude_item_ids' has 1001 ids; at most 1000",),
    ),
    Case(
        "NaN age",
        with_input("age", np.array([[np.nan]], np.float32), "FP32"),
        ("input 'age' must be finite",),
    ),
    Case(
        "infinite age",
        with_input("age", np.array([[np.inf]], np.float32), "FP32"),
        ("input 'age' must be finite",),
    ),
    Case(
        "absurd age",
        with_input("age", np.array([[1e30]], np.float32), "FP32"),
        ("input 'age' must be between 0 and 150",),
    ),
    Case(
        "NaN temperature",
        with_input("temperature", np.array([[np.nan]], np.float32), "FP32"),
        ("temperature must be a finite number >= 0",),
    ),
    Case(
        "negative temperature",
        with_input("temperature", np.array([[-1.0]], np.float32), "FP32"),
        ("temperature must be a finite number >= 0",),
    ),
    Case(
        "invalid UTF-8",
        with_input("country", np.array([[b"\xff\xfe"]], np.object_), "BYTES"),
        ("input 'country' is not valid UTF-8",),
    ),
    Case(
        "over-long string",
        with_input("zipcode", np.array([[b"9" * 10_000]], np.object_), "BYTES"),
        ("input 'zipcode' is 10000 bytes long; at most 16",),
    ),
    Case(
        "unknown input",
        with_input("bogus", np.array([[1]], np.int32), "INT32"),
        ("unexpected inference input 'bogus'",),
    ),
]


def raw_infer(protocol: str, url: str, inputs: list[Tensor]) -> Any:
    module = MODULES[protocol]
    tensors = []
    for name, array, datatype in inputs:
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    client = module.InferenceServerClient(url)
    try:
        return client.infer("recommender", tensors)
    finally:
        client.close()  # an open HTTP keep-alive connection would delay server shutdown


def url_for(triton: TritonServer, protocol: str) -> str:
    return triton.grpc_url if protocol == "grpc" else triton.http_url


@pytest.fixture(scope="module")
def known_user(trained: TrainedSet) -> int:
    return int(trained.data.valid["user_id"].iloc[0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_invalid_argument_naming_the_problem(
    protocol: str, case: Case, triton: TritonServer, known_user: int
) -> None:
    url = url_for(triton, protocol)
    with pytest.raises(InferenceServerException) as info:
        raw_infer(protocol, url, case.inputs())
    assert info.value.status() == INVALID_STATUS[protocol], info.value
    for expected in case.expected:
        assert expected in info.value.message(), info.value.message()
    # The server keeps serving: the next valid request is answered.
    result = raw_infer(protocol, url, base(known_user, 4))
    assert (result.as_numpy("item_ids") >= 0).sum() == 4


# Bad values of inputs only later stages use (and an override): refused by the first stage,
# naming the input, before retrieval or ranking computes anything for them.
EARLY_CASES = [
    Case("top_k 0", lambda: base(top_k=0), ("input 'top_k'", "between 1 and 100", "got 0")),
    Case("top_k above candidates", lambda: base(top_k=101), ("input 'top_k'", "got 101")),
    Case(
        "exclude list too long",
        with_input("exclude_item_ids", np.zeros((1, 1001), np.int64), "INT64"),
        ("input 'exclude_item_ids' has 1001 ids; at most 1000",),
    ),
    Case(
        "session list too long",
        with_input("history_item_ids", np.ones((1, 201), np.int64), "INT64"),
        ("input 'history_item_ids' has 201 ids; at most 200",),
    ),
    Case(
        "NaN temperature",
        with_input("temperature", np.array([[np.nan]], np.float32), "FP32"),
        ("input 'temperature'", "finite number >= 0"),
    ),
    Case(
        "negative temperature",
        with_input("temperature", np.array([[-1.0]], np.float32), "FP32"),
        ("input 'temperature'", "got -1.0"),
    ),
    Case(
        "absurd age",
        with_input("age", np.array([[1e30]], np.float32), "FP32"),
        ("input 'age' must be between 0 and 150",),
    ),
]
DOWNSTREAM = ("retrieval", "ranking", "reorder")


def stage_counts(triton: TritonServer) -> dict[str, tuple[int, int, int]]:
    """(inference_count, successes, failures) per stage, from Triton's own statistics."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        stats = client.get_inference_statistics("").model_stats
    finally:
        client.close()
    return {
        s.name: (s.inference_count, s.inference_stats.success.count, s.inference_stats.fail.count)
        for s in stats
        if s.name in (*DOWNSTREAM, "user_features")
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", EARLY_CASES, ids=lambda c: c.name)
def test_a_bad_request_is_refused_before_retrieval_runs(
    protocol: str, case: Case, triton: TritonServer, known_user: int
) -> None:
    url = url_for(triton, protocol)
    before = stage_counts(triton)
    with pytest.raises(InferenceServerException) as info:
        raw_infer(protocol, url, case.inputs())
    after = stage_counts(triton)
    assert info.value.status() == INVALID_STATUS[protocol], info.value
    for expected in case.expected:
        assert expected in info.value.message(), info.value.message()
    # The first stage executed (and refused) it; no later stage saw it (tests run one at a
    # time, so nothing else moves these counters in between). The Python backend counts an
    # error response as an executed request, not a failed one.
    assert after["user_features"] != before["user_features"]
    assert {m: after[m] for m in DOWNSTREAM} == {m: before[m] for m in DOWNSTREAM}
    result = raw_infer(protocol, url, base(known_user, 4))
    assert (result.as_numpy("item_ids") >= 0).sum() == 4
    assert stage_counts(triton)["retrieval"][0] == before["retrieval"][0] + 1


def test_each_stage_keeps_its_own_guard_for_direct_calls(triton: TritonServer) -> None:
    """A direct call to reorder (no first stage in front) is still refused, naming top_k."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    tensors = []
    for name, array, datatype in (
        ("candidate_rows", np.arange(100, dtype=np.int64).reshape(1, 100), "INT64"),
        ("ranking_scores", np.linspace(1, 0, 100, dtype=np.float32).reshape(1, 100), "FP32"),
        ("top_k", np.array([[0]], np.int32), "INT32"),
    ):
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    with pytest.raises(InferenceServerException, match="top_k must be between 1 and") as info:
        client.infer("reorder", tensors)
    assert info.value.status() == INVALID_STATUS["grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_negative_and_unknown_user_ids_are_served_out_of_vocabulary(
    protocol: str, triton: TritonServer
) -> None:
    with RecommenderClient(url_for(triton, protocol), protocol) as client:  # type: ignore[arg-type]
        unknown = [client.recommend(user, 10) for user in (-1, -(2**63), 2**62, 987_654_321)]
    # Every unknown user maps to the same out-of-vocabulary index: the same answer.
    assert all(len(r.item_ids) == 10 for r in unknown)
    assert all(r.item_ids == unknown[0].item_ids for r in unknown)


def http_post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{url}/v2/models/recommender/infer", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def json_body(user_id: object = 5, top_k: object = 5, **extra: object) -> bytes:
    inputs = [
        {"name": "user_id", "shape": [1, 1], "datatype": "INT64", "data": [user_id]},
        {"name": "top_k", "shape": [1, 1], "datatype": "INT32", "data": [top_k]},
    ]
    for name, value in extra.items():
        inputs.append({"name": name, "shape": [1, 1], "datatype": "FP32", "data": [value]})
    return json.dumps({"inputs": inputs}).encode()


class UpstreamBugError(AssertionError):
    """Raised by a test when the server shows a known upstream bug, so that the test's strict
    xfail (`raises=UpstreamBugError`) matches that bug only: any other wrong answer is a plain
    failure, and a fixed upstream makes the test pass, which strict turns into a failure
    (XPASS) on purpose: then docs/errors.md and these tests are updated."""


# triton-inference-server/server#8762: Triton 2.51's HTTP frontend answers JSON it cannot
# parse with 500 (INTERNAL), not 400; the message still says what is wrong.
SERVER_8762 = "triton-inference-server/server#8762: unparseable request JSON answered 500, not 400"
JSON_PARSE_CASES = [
    ("truncated JSON", b'{"inputs": [', "failed to parse the request JSON buffer"),
    ("not JSON", b"hello", "failed to parse the request JSON buffer"),
    ("string for a number", json_body(user_id="abc"), "Unable to parse 'data'"),
    ("string for a float", json_body(age="old"), "Unable to parse 'data'"),
    ("integer beyond int64", json_body(user_id=2**70), "Unable to parse 'data'"),
    ("inputs not a list", b'{"inputs": 5}', "Unable to parse 'inputs'"),
]


def raise_if_8762(status: int, answer: dict[str, Any]) -> None:
    error = answer.get("error", "")
    if status == 500 and ("failed to parse" in error or "Unable to parse" in error):
        raise UpstreamBugError(f"{SERVER_8762}: {error}")


@pytest.mark.xfail(strict=True, raises=UpstreamBugError, reason=SERVER_8762)
@pytest.mark.parametrize(
    ("body", "expected"),
    [case[1:] for case in JSON_PARSE_CASES],
    ids=[case[0] for case in JSON_PARSE_CASES],
)
def test_malformed_json_is_a_400_naming_the_problem(
    body: bytes, expected: str, triton: TritonServer
) -> None:
    got, answer = http_post(triton.http_url, body)
    # Holds with and without the upstream bug: the message says what is wrong, nothing
    # reached a model, and the server keeps serving.
    assert expected in answer.get("error", ""), answer
    assert http_post(triton.http_url, json_body(top_k=3))[0] == 200
    raise_if_8762(got, answer)
    assert got == 400, answer


def test_nan_literal_in_json_reaches_the_model_and_is_refused(triton: TritonServer) -> None:
    """Triton's parser accepts a NaN literal for an FP32 input; the model refuses it."""
    got, answer = http_post(triton.http_url, json_body(age=float("nan")))
    assert (got, "input 'age' must be finite" in answer.get("error", "")) == (400, True), answer
    assert http_post(triton.http_url, json_body(top_k=3))[0] == 200


# triton-inference-server/server PR #8821 (open): the HTTP JSON parser casts integers into
# narrower tensor types without a range check, so 2**32 + 3 for the INT32 `top_k` arrives
# as 3. Binary tensors (gRPC, the HTTP client library) cannot carry such a value.
NARROWED = "triton-inference-server/server#8821: JSON integers narrowed into INT32 unchecked"


@pytest.mark.xfail(strict=True, raises=UpstreamBugError, reason=NARROWED)
def test_json_top_k_beyond_int32_is_refused(triton: TritonServer) -> None:
    status, answer = http_post(triton.http_url, json_body(top_k=2**32 + 3))
    if status == 200:
        shapes = {output["name"]: output["shape"] for output in answer["outputs"]}
        if shapes["item_ids"] == [1, 3]:  # what Triton 2.51 does
            raise UpstreamBugError(f"{NARROWED}: top_k 4294967299 was served as 3")
    raise_if_8762(status, answer)  # a range check that reports through #8762's path
    assert status == 400, answer


def grpc_infer_raw(url: str, request: service_pb2.ModelInferRequest) -> tuple[grpc.StatusCode, str]:
    """Send a hand-built ModelInferRequest (tritonclient would refuse to build these)."""
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK, ""


def grpc_request(
    typed: dict[str, tuple[str, dict[str, list[Any]]]], raw: dict[str, tuple[str, bytes]]
) -> service_pb2.ModelInferRequest:
    """`typed`: name -> (datatype, {InferTensorContents field: values}); `raw`: name ->
    (datatype, raw_input_contents bytes). Each input is one row, shape [1, 1]."""
    request = service_pb2.ModelInferRequest(model_name="recommender")
    for name, (datatype, contents) in typed.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1, 1])
        for field_name, values in contents.items():
            getattr(tensor.contents, field_name).extend(values)
    for name, (datatype, data) in raw.items():
        request.inputs.add(name=name, datatype=datatype, shape=[1, 1])
        request.raw_input_contents.append(data)
    return request


TOP_K = {"top_k": ("INT32", {"int_contents": [5]})}
RAW_TOP_K = {"top_k": ("INT32", np.int32(5).tobytes())}
USER = {"user_id": ("INT64", {"int64_contents": [5]})}
RAW_USER = {"user_id": ("INT64", np.int64(5).tobytes())}
# The JSON cases above, as gRPC can carry them: typed contents of the wrong kind, and raw
# bytes whose size does not fit the declared type (a request uses one or the other).
GRPC_MALFORMED = [
    (
        "string for a number",
        grpc_request({"user_id": ("INT64", {"bytes_contents": [b"abc"]}), **TOP_K}, {}),
        ("tensor data for input tensor 'user_id'", "of type 'BYTES', expected datatype 'INT64'"),
    ),
    (
        "string for a float",
        grpc_request({**USER, **TOP_K, "age": ("FP32", {"bytes_contents": [b"old"]})}, {}),
        ("tensor data for input tensor 'age'", "of type 'BYTES', expected datatype 'FP32'"),
    ),
    (
        "float for an integer",
        grpc_request({"user_id": ("INT64", {"fp32_contents": [5.5]}), **TOP_K}, {}),
        ("tensor data for input tensor 'user_id'", "of type 'FP32', expected datatype 'INT64'"),
    ),
    (
        "raw string bytes for a number",
        grpc_request({}, {"user_id": ("INT64", b"abc"), **RAW_TOP_K}),
        ("input byte size mismatch for input 'user_id'", "Expected 8, got 3"),
    ),
    (
        "integer wider than int64",
        grpc_request({}, {"user_id": ("INT64", b"\x01" * 16), **RAW_TOP_K}),
        ("input byte size mismatch for input 'user_id'", "Expected 8, got 16"),
    ),
    (
        "raw string bytes for a float",
        grpc_request({}, {**RAW_USER, **RAW_TOP_K, "age": ("FP32", b"old")}),
        ("input byte size mismatch for input 'age'", "Expected 4, got 3"),
    ),
]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [case[1:] for case in GRPC_MALFORMED],
    ids=[case[0] for case in GRPC_MALFORMED],
)
def test_malformed_content_over_grpc_is_invalid_argument(
    request_: service_pb2.ModelInferRequest,
    expected: tuple[str, ...],
    triton: TritonServer,
    known_user: int,
) -> None:
    code, details = grpc_infer_raw(triton.grpc_url, request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    for text in expected:
        assert text in details, details
    result = raw_infer("grpc", triton.grpc_url, base(known_user, 4))
    assert (result.as_numpy("item_ids") >= 0).sum() == 4


def test_a_grpc_message_that_is_not_protobuf_is_internal_unable_to_parse(
    triton: TritonServer,
) -> None:
    """Bytes that do not decode as a ModelInferRequest (the analogue of non-JSON) never reach
    Triton: gRPC's C++ library answers them INTERNAL "Unable to parse request", as the gRPC
    status-code conventions prescribe for a request proto that cannot be parsed."""
    valid = grpc_request(USER | TOP_K, {}).SerializeToString()
    with grpc.insecure_channel(triton.grpc_url) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=None,
        )
        for body in (b"\xff\xff\xff\x0fhello", valid[: len(valid) // 2]):
            with pytest.raises(grpc.RpcError) as info:
                infer(body, timeout=30)
            assert info.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
            assert "Unable to parse request" in info.value.details()  # type: ignore[attr-defined]
        assert infer(valid, timeout=30)  # the server keeps serving on the same channel


def _direct_ranking_inputs(triton: TritonServer, user: int) -> list[Tensor]:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    user_id = grpcclient.InferInput("user_id", [1, 1], "INT64")
    user_id.set_data_from_numpy(np.array([[user]], np.int64))
    users = client.infer("user_features", [user_id])
    return [
        ("user_categorical", users.as_numpy("user_categorical"), "INT64"),
        ("user_continuous", users.as_numpy("user_continuous"), "FP32"),
        ("candidate_rows", np.arange(100, dtype=np.int64).reshape(1, 100), "INT64"),
    ]


def test_a_failing_request_in_a_dynamic_batch_does_not_fail_the_others(
    triton: TritonServer, known_user: int
) -> None:
    """Direct calls to `ranking`: an out-of-range category passes validation and makes the
    batched DLRM call raise; the model answers that request INTERNAL and the rest normally."""
    good = _direct_ranking_inputs(triton, known_user)
    bad = [(n, np.full_like(a, 10**9) if n == "user_categorical" else a, d) for n, a, d in good]
    client = grpcclient.InferenceServerClient(triton.grpc_url)

    def stats() -> tuple[int, int]:
        model = client.get_inference_statistics("ranking").model_stats[0]
        return model.execution_count, model.inference_count

    def send(inputs: list[Tensor]) -> Any:
        tensors = []
        for name, array, datatype in inputs:
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        try:
            return client.infer("ranking", tensors).as_numpy("ranking_scores")
        except InferenceServerException as exc:
            return exc

    expected = send(good)
    executions_before, inferences_before = stats()
    plan = [bad if i % 4 == 0 else good for i in range(48)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, plan))
    executions, inferences = stats()
    for inputs, answer in zip(plan, answers, strict=True):
        if inputs is bad:
            assert isinstance(answer, InferenceServerException)
            assert answer.status() == "StatusCode.INTERNAL"
            assert "model 'ranking' failed on this request" in answer.message()
        else:
            np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    # Some requests shared an execution: bad and good ones really were batched together.
    assert executions - executions_before < inferences - inferences_before


def test_bad_requests_in_the_ensemble_do_not_disturb_concurrent_good_ones(
    trained: TrainedSet, triton: TritonServer
) -> None:
    users = trained.data.valid["user_id"].drop_duplicates().head(8).tolist()
    # Retries as every client does: on a loaded machine the queue policy may refuse a good
    # request with UNAVAILABLE, which is not the disturbance this test is about.
    client = RecommenderClient(triton.grpc_url, "grpc")
    expected = {u: client.recommend(u, 5).item_ids for u in users}
    plan: list[RecommendationRequest] = []
    for user in users:
        plan += [
            RecommendationRequest(user, 5),
            RecommendationRequest(user, 0),
            RecommendationRequest(user, 5, features={"age": float("nan")}),
        ]

    def send(request: RecommendationRequest) -> Any:
        try:
            return client.recommend_batch([request])[0]
        except InvalidRequestError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(send, plan * 2))
    for request, answer in zip(plan * 2, answers, strict=True):
        if request.top_k == 5 and not request.features:
            assert answer.item_ids == expected[request.user_id]
        else:
            assert isinstance(answer, InvalidRequestError), answer


def test_direct_call_with_rows_outside_the_catalog_is_refused(
    triton: TritonServer, known_user: int
) -> None:
    """Rows below -1 would wrap around in numpy (-1 marks an unfilled slot): refused."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    for rows in (-2, 10**6):  # -1 is an unfilled slot, allowed
        inputs = []
        for name, array, datatype in _direct_ranking_inputs(triton, known_user):
            if name == "candidate_rows":
                array = np.full((1, 100), rows, np.int64)
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        with pytest.raises(InferenceServerException, match="input 'candidate_rows' must"):
            client.infer("ranking", inputs)
