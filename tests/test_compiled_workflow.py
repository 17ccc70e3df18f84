"""CompiledWorkflow must equal Workflow.transform exactly, on every kind of value."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datagen import generate, split
from recsys.contract import FeatureSpec
from recsys.schema import load_schema
from recsys.settings import DataSettings
from serving.stages import UserFeatureStage
from tests.conftest import TrainedSet
from workflows.compiled import CompiledWorkflow, UnsupportedOperatorError
from workflows.fitted import FittedWorkflows, fit_workflows, stack_features, transform


def columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: frame[name].to_numpy() for name in frame.columns}


@pytest.fixture(scope="module")
def stage(trained: TrainedSet) -> UserFeatureStage:
    return UserFeatureStage(trained.repository / "user_features" / "1")


def test_all_known_users_and_odd_rows_match_nvtabular(
    trained: TrainedSet, stage: UserFeatureStage
) -> None:
    odd = pd.DataFrame(
        {
            "user_id": [1, -5, 0],
            "age": [np.nan, 1e6, -3.0],
            "country": [None, "never-seen", "country_03"],
            "device": ["ios", None, "toaster"],
            "zipcode": [None, "x", "00042"],
        }
    )
    frame = pd.concat([trained.data.users, odd], ignore_index=True)
    frame["age"] = frame["age"].astype(np.float32)
    want_cat, want_cont = stage.transform_nvtabular(columns(frame))
    got_cat, got_cont = stage.transform(columns(frame))
    np.testing.assert_array_equal(got_cat, want_cat)
    np.testing.assert_allclose(got_cont, want_cont, rtol=1e-6, atol=1e-6)


countries = st.sampled_from([None, "country_01", "country_07", "nowhere", ""])
devices = st.sampled_from([None, "ios", "android", "web", "fridge"])


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(min_value=-(2**40), max_value=2**40),
            st.one_of(st.none(), st.floats(min_value=-1e4, max_value=1e4, width=32)),
            countries,
            devices,
            st.one_of(st.none(), st.text(max_size=6)),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_random_rows_match_nvtabular(stage: UserFeatureStage, rows: list[tuple]) -> None:  # type: ignore[type-arg]
    frame = pd.DataFrame(rows, columns=["user_id", "age", "country", "device", "zipcode"])
    frame["user_id"] = frame["user_id"].astype(np.int64)
    frame["age"] = frame["age"].astype(np.float32)
    for column in ("country", "device", "zipcode"):
        frame[column] = frame[column].astype(object)
    want_cat, want_cont = stage.transform_nvtabular(columns(frame))
    got_cat, got_cont = stage.transform(columns(frame))
    np.testing.assert_array_equal(got_cat, want_cat)
    np.testing.assert_allclose(got_cont, want_cont, rtol=1e-6, atol=1e-6)


def test_item_workflow_compiles_too(trained: TrainedSet) -> None:
    workflows = FittedWorkflows.load(trained.artifacts / "workflows")
    compiled = CompiledWorkflow.from_workflow(workflows.item, workflows.item_spec)
    items = trained.data.items
    want = stack_features(transform(workflows.item, items), workflows.item_spec)
    got = compiled.transform({c: items[c].to_numpy() for c in items.columns})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)


def test_an_unsupported_operator_is_refused_at_load(tmp_path: Path) -> None:
    import nvtabular as nvt
    from merlin.io import Dataset
    from nvtabular import ops

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    workflow = nvt.Workflow(["x"] >> ops.Clip(min_value=0) >> ops.AddTags(["continuous"]))
    workflow.fit(Dataset(frame, cpu=True))
    spec = FeatureSpec(categorical=(), cardinalities=(), continuous=("x",))
    with pytest.raises(UnsupportedOperatorError, match="Clip"):
        CompiledWorkflow.from_workflow(workflow, spec)


MOVIELENS = load_schema("movielens")


@pytest.fixture(scope="module")
def genres_workflow(tmp_path_factory: pytest.TempPathFactory) -> FittedWorkflows:
    """The MovieLens workflows: genres is a multi-hot (token list) item feature."""
    data = split(generate(MOVIELENS, DataSettings(num_users=150, num_items=90,
                                                 impressions_per_user=8)), 0.2)  # fmt: skip
    return fit_workflows(data, MOVIELENS, tmp_path_factory.mktemp("ml"))


tokens = st.sampled_from(["genres_00", "genres_03", "genres_07", "never-seen", ""])


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2**40),
            st.lists(tokens, max_size=9),
            st.one_of(st.none(), st.floats(min_value=1900, max_value=2030, width=32)),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_multi_hot_token_lists_match_nvtabular(
    genres_workflow: FittedWorkflows,
    rows: list[tuple],  # type: ignore[type-arg]
) -> None:
    """Empty lists, unknown tokens and lists longer than max_tokens, compiled vs NVTabular."""
    workflow, spec = genres_workflow.item, genres_workflow.item_spec
    frame = pd.DataFrame(rows, columns=["item_id", "genres", "year"])
    frame["year"] = frame["year"].astype(np.float32)
    want = stack_features(transform(workflow, frame), spec)
    got = CompiledWorkflow.from_workflow(workflow, spec).transform(columns(frame))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
