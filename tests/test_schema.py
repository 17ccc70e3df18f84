"""The feature schema: shipped files load, round-trip, and bad ones name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recsys.schema import (
    FeatureSchema,
    SchemaError,
    available_schemas,
    differences,
    label_rule,
    load_schema,
)

BASE = {
    "users": {"table": "u", "id": "uid", "features": {"city": {"kind": "categorical"}}},
    "items": {"table": "i", "id": "iid", "features": {"tags": {"kind": "multi_hot",
                                                              "max_tokens": 4}}},
    "interactions": {"table": "x", "user": "uid", "item": "iid",
                     "label": {"column": "stars", "rule": ">= 4"}},
}  # fmt: skip


def write(tmp_path: Path, **changes: object) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_schemas_load_and_round_trip_keeping_their_order() -> None:
    assert available_schemas() == ["aliccp", "movielens", "synthetic"]
    for name in available_schemas():
        schema = load_schema(name)
        again = FeatureSchema.from_json(schema.to_json())
        assert again == schema and differences(schema, again) == []
        assert list(again.users.features) == list(schema.users.features)


def test_a_label_rule_is_parsed() -> None:
    assert label_rule(load_schema("movielens").interactions.label) == (">=", 4.0)
    assert label_rule(load_schema("synthetic").interactions.label) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"users__features__city": {"kind": "hashed"}}, "users.features.city"),
        ({"users__features__city": {"kind": "hashed"}}, "needs `buckets`"),
        ({"items__features__tags": {"kind": "multi_hot"}}, "needs `max_tokens`"),
        ({"users__features__city": {"kind": "categorical", "range": [0, 1]}},
         "`range` applies to numbers"),
        ({"users__features__city": {"kind": "continuous", "range": [5, 1]}}, "low < high"),
        ({"users__features__city": {"kind": "kind-of"}}, "users.features.city.kind"),
        ({"users__features__top_k": {"kind": "categorical"}}, "'top_k' is reserved"),
        ({"items__features__city": {"kind": "categorical"}}, "'city' is declared twice"),
        ({"users__features__city": {"kind": "categorical", "colour": 1}}, "colour"),
        ({"interactions__label": {"column": "stars", "rule": "about 4"}},
         "must be `<op> <number>`"),
        ({"items__features__tags": {"kind": "multi_hot", "max_tokens": 2, "monitored": True}},
         "not monitored"),
    ],
)  # fmt: skip
def test_an_invalid_schema_names_the_field_and_the_problem(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SchemaError, match="s.yaml is invalid") as info:
        load_schema(write(tmp_path, **changes))
    assert message in str(info.value)


def test_differences_name_each_feature() -> None:
    old = load_schema("synthetic")
    country = old.users.features["country"].model_copy(update={"max_length": 3})
    features = {**old.users.features, "country": country}
    del features["device"]
    new = old.model_copy(update={"users": old.users.model_copy(update={"features": features})})
    assert differences(old, new) == [
        "users: feature 'country' differs in max_length",
        "users: feature 'device' is gone",
    ]
