"""The generated repository's structure. Triton itself validates it in test_server.py."""

import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from recsys.contract import ENSEMBLE_NAME, STAGE_MODEL_NAMES
from serving.repository import (
    build_model_repository,
    build_stage_config,
    load_specs,
    stage_interfaces,
)
from tests.conftest import TrainedSet


def read_config(path) -> mc.ModelConfig:  # type: ignore[no-untyped-def]
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def test_every_stage_is_a_versioned_dynamically_batched_cpu_model(trained: TrainedSet) -> None:
    for name in STAGE_MODEL_NAMES:
        config = read_config(trained.repository / name / "config.pbtxt")
        assert config.backend == "python"
        assert config.HasField("dynamic_batching")
        assert config.max_batch_size == trained.settings.serving.max_batch_size
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        assert (trained.repository / name / "1" / "model.py").exists()


def test_ensemble_chains_the_stages_in_order_pinned_to_the_version(trained: TrainedSet) -> None:
    config = read_config(trained.repository / ENSEMBLE_NAME / "config.pbtxt")
    assert config.platform == "ensemble"
    assert [s.model_name for s in config.ensemble_scheduling.step] == list(STAGE_MODEL_NAMES)
    assert {s.model_version for s in config.ensemble_scheduling.step} == {1}
    inputs = {i.name: i.optional for i in config.input}
    assert inputs["user_id"] is False and inputs["top_k"] is False
    assert inputs["exclude_item_ids"] and inputs["age"] and inputs["country"]
    assert [o.name for o in config.output] == ["item_ids", "scores", "model_version"]


def test_ranking_config_can_target_the_libtorch_backend(trained: TrainedSet) -> None:
    user_spec, item_spec = load_specs(trained.artifacts)
    serving = trained.settings.serving
    interface = stage_interfaces(trained.schema, user_spec, item_spec, serving)["ranking"]
    config = build_stage_config("ranking", interface, serving, backend="pytorch_libtorch")
    assert config.platform == "pytorch_libtorch" and not config.backend
    assert config.default_model_filename == "model.pt"
    # Input names equal the scripted model's forward arguments, which libtorch matches.
    names = [i.name for i in config.input]
    assert names == ["user_categorical", "user_continuous", "candidate_rows"]
    model = torch.jit.load(str(trained.repository / "ranking" / "1" / "model.pt"))
    assert [a.name for a in model.forward.schema.arguments][1:] == names


def test_a_second_version_lands_beside_the_first(trained: TrainedSet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    build_model_repository(trained.artifacts, tmp_path, trained.settings.serving, version=1)
    build_model_repository(trained.artifacts, tmp_path, trained.settings.serving, version=2)
    for name in STAGE_MODEL_NAMES:
        assert (tmp_path / name / "1").is_dir() and (tmp_path / name / "2").is_dir()
    config = read_config(tmp_path / ENSEMBLE_NAME / "config.pbtxt")
    assert {s.model_version for s in config.ensemble_scheduling.step} == {2}


def test_every_stage_has_the_configured_queue_policy(trained: TrainedSet) -> None:
    policy = trained.settings.serving.queue_policy
    assert policy.max_queue_size > 0 and policy.default_timeout_microseconds > 0
    for name in STAGE_MODEL_NAMES:
        config = read_config(trained.repository / name / "config.pbtxt")
        queue = config.dynamic_batching.default_queue_policy
        assert queue.max_queue_size == policy.max_queue_size, name
        assert queue.default_timeout_microseconds == policy.default_timeout_microseconds, name
        assert mc.ModelQueuePolicy.TimeoutAction.Name(queue.timeout_action) == "REJECT", name
        assert queue.allow_timeout_override == policy.allow_timeout_override, name


def test_a_changed_queue_policy_flows_into_the_config(trained: TrainedSet) -> None:
    serving = trained.settings.serving
    policy = serving.queue_policy.model_copy(
        update={"max_queue_size": 7, "default_timeout_microseconds": 1234,
                "timeout_action": "DELAY", "allow_timeout_override": False}
    )  # fmt: skip
    changed = serving.model_copy(update={"queue_policy": policy})
    interface = stage_interfaces(trained.schema, *load_specs(trained.artifacts), changed)["reorder"]
    queue = build_stage_config("reorder", interface, changed).dynamic_batching.default_queue_policy
    assert (queue.max_queue_size, queue.default_timeout_microseconds) == (7, 1234)
    assert queue.timeout_action == mc.ModelQueuePolicy.DELAY
    assert queue.allow_timeout_override is False


def test_the_first_stage_gets_every_input_it_validates(trained: TrainedSet) -> None:
    """user_features refuses a bad top_k, exclude list or temperature before any model runs:
    the ensemble must hand it those inputs, optional for direct calls, while the ensemble
    keeps top_k required because reorder requires it."""
    checked = ("top_k", "exclude_item_ids", "temperature")
    stage = read_config(trained.repository / "user_features" / "config.pbtxt")
    optional = {i.name: i.optional for i in stage.input}
    assert all(optional[name] for name in checked), optional
    ensemble = read_config(trained.repository / ENSEMBLE_NAME / "config.pbtxt")
    (first,) = (s for s in ensemble.ensemble_scheduling.step if s.model_name == "user_features")
    assert {name: first.input_map[name] for name in checked} == {n: n for n in checked}
    ensemble_optional = {i.name: i.optional for i in ensemble.input}
    assert ensemble_optional["top_k"] is False
    assert ensemble_optional["exclude_item_ids"] and ensemble_optional["temperature"]
