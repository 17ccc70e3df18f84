"""Synthetic data for any schema, deterministic from the seed.

`planted`: users and items get latent factors; every feature is a noisy view of its
entity's factors, shaped by the feature's `synthetic` hints; item exposure follows a Zipf
popularity skew and clicks follow the user-item affinity, so a model that learns the
structure beats a popularity baseline. `merlin`: a data set of merlin.datasets.synthetic,
parsed by the single_table reader (same checks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from datagen.checks import canonical_entity
from datagen.frames import RawData
from datagen.readers import parse_single_table
from recsys.contract import LABEL, TIMESTAMP
from recsys.schema import Entity, Feature, FeatureSchema
from recsys.settings import DataSettings

USER_ID_OFFSET = 100_000
ITEM_ID_OFFSET = 500_000
SECONDS_PER_DAY = 86_400
DAYS = 30
DEFAULT_CARDINALITY = {"categorical": 10, "hashed": 1000, "multi_hot": 12}
MAX_CLUSTERS = 64  # latent clusters of a categorical; beyond, values spread around them
CLUSTER_NOISE = 0.15  # latent noise before clustering at signal 1
TOKENS_PER_ROW = (1, 3)  # multi_hot: tokens per row (inclusive)


def generate(schema: FeatureSchema, settings: DataSettings) -> RawData:
    """Users, items and labelled interactions for `schema`, deterministic from the seed."""
    if schema.synthetic.generator == "merlin":
        return generate_merlin(schema, settings)
    return generate_planted(schema, settings)


def generate_merlin(schema: FeatureSchema, settings: DataSettings) -> RawData:
    from merlin.datasets.synthetic import generate_data  # heavy import, only when used

    dataset = schema.synthetic.dataset
    if dataset is None:
        raise ValueError(f"schema {schema.name!r}: generator `merlin` needs synthetic.dataset")
    rows = settings.num_users * (schema.synthetic.rows_per_user or settings.impressions_per_user)
    frame = generate_data(dataset, rows).to_ddf().compute()
    return parse_single_table(schema, frame.reset_index(drop=True), f"merlin {dataset}")


def generate_planted(schema: FeatureSchema, settings: DataSettings) -> RawData:
    rng = np.random.default_rng(settings.seed)
    dim, n_users, n_items = settings.latent_dim, settings.num_users, settings.num_items
    user_latent = rng.normal(0.0, 1.0, (n_users, dim)) / np.sqrt(dim)
    item_latent = rng.normal(0.0, 1.0, (n_items, dim)) / np.sqrt(dim)

    user_ids = USER_ID_OFFSET + rng.permutation(n_users * 3)[:n_users]
    item_ids = ITEM_ID_OFFSET + rng.permutation(n_items * 3)[:n_items]
    users = entity_frame(schema.users, user_ids, user_latent, settings, rng)
    items = entity_frame(schema.items, item_ids, item_latent, settings, rng)

    popularity = 1.0 / np.arange(1, n_items + 1) ** settings.popularity_skew
    popularity = popularity[rng.permutation(n_items)]
    popularity /= popularity.sum()

    # Impressions: half from popularity (what a naive feed shows), half from affinity.
    n_imp = n_users * settings.impressions_per_user
    affinity = user_latent @ item_latent.T * 4.0
    affinity_probs = np.exp(affinity - affinity.max(axis=1, keepdims=True))
    affinity_probs /= affinity_probs.sum(axis=1, keepdims=True)
    user_idx = np.repeat(np.arange(n_users), settings.impressions_per_user)
    from_popularity = rng.random(n_imp) < 0.5
    item_idx = np.empty(n_imp, dtype=np.int64)
    item_idx[from_popularity] = rng.choice(n_items, int(from_popularity.sum()), p=popularity)
    by_affinity = ~from_popularity
    item_idx[by_affinity] = _sample_rows(affinity_probs, user_idx[by_affinity], rng)

    logit = (
        6.0 * np.sum(user_latent[user_idx] * item_latent[item_idx], axis=1)
        + 0.3 * np.log(popularity[item_idx] * n_items)
        - 1.5
    )
    label = (rng.random(n_imp) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    timestamp = rng.integers(0, DAYS * SECONDS_PER_DAY, n_imp).astype(np.int64)
    interactions = pd.DataFrame(
        {
            schema.users.id: user_ids[user_idx].astype(np.int64),
            schema.items.id: item_ids[item_idx].astype(np.int64),
            TIMESTAMP: timestamp,
            LABEL: label,
        }
    ).sort_values([TIMESTAMP, schema.users.id], kind="stable", ignore_index=True)
    return RawData(users=users, items=items, interactions=interactions)


def _sample_rows(probs: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column per entry of `rows`, drawn from that row's distribution in `probs`."""
    n_cols = probs.shape[1]
    cumulative = np.cumsum(probs, axis=1)
    cumulative /= cumulative[:, -1:]
    flat = (cumulative + np.arange(len(probs))[:, None]).ravel()
    picks = np.searchsorted(flat, rows + rng.random(len(rows)), side="right") - rows * n_cols
    return np.clip(picks, 0, n_cols - 1)


def entity_frame(
    entity: Entity,
    ids: np.ndarray,
    latent: np.ndarray,
    settings: DataSettings,
    rng: np.random.Generator,
) -> pd.DataFrame:
    columns: dict[str, object] = {entity.id: ids.astype(np.int64)}
    continuous = 0
    for name, feature in entity.features.items():
        if feature.kind == "continuous":
            values: object = continuous_values(feature, latent, continuous, settings, rng)
            continuous += 1
        elif feature.kind == "multi_hot":
            values = token_values(name, feature, latent, settings, rng)
        else:
            values = category_values(name, feature, latent, settings, rng)
        columns[name] = values
    return canonical_entity(pd.DataFrame(columns), entity, f"generated {entity.table}")


def _missing(
    feature: Feature, n: int, settings: DataSettings, rng: np.random.Generator
) -> np.ndarray:
    rate = feature.synthetic.missing_rate
    rate = settings.missing_rate if rate is None else rate
    return rng.random(n) < (rate if feature.nullable else 0.0)


def _cardinality(feature: Feature) -> int:
    return feature.synthetic.cardinality or DEFAULT_CARDINALITY[feature.kind]


def _scores(
    latent: np.ndarray, clusters: int, signal: float, rng: np.random.Generator
) -> np.ndarray:
    """Projections of the (noisy) latent factors on random cluster directions; the noise
    grows as the signal falls (signal 0: pure noise)."""
    directions = rng.normal(size=(latent.shape[1], clusters))
    if signal <= 0:
        return rng.normal(size=(len(latent), clusters))
    noisy = latent + rng.normal(0.0, CLUSTER_NOISE / signal, latent.shape)
    return noisy @ directions


def _tail(count: int, width: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """Offsets in [0, width): Zipf long tail with `skew`, else uniform."""
    if skew > 0:
        return (rng.zipf(max(skew, 1.01), count) - 1) % width
    return rng.integers(0, width, count)


def category_codes(feature: Feature, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Codes in [0, cardinality): the latent cluster, spread over a tail of nearby codes
    when the cardinality exceeds the clusters (e.g. zip codes around a region)."""
    hints, cardinality = feature.synthetic, _cardinality(feature)
    n = len(latent)
    if hints.signal <= 0:
        return _tail(n, cardinality, hints.skew, rng)
    clusters = min(cardinality, MAX_CLUSTERS)
    cluster = np.argmax(_scores(latent, clusters, hints.signal, rng), axis=1)
    if clusters == cardinality:
        return cluster
    base = rng.integers(0, cardinality, clusters)
    width = max(1, cardinality // clusters)
    return (
        base[cluster] + _tail(n, width if hints.skew <= 0 else cardinality, hints.skew, rng)
    ) % cardinality


def _spell(name: str, feature: Feature, code: int) -> str | int:
    if feature.value_type == "int64":
        return int(code)
    width = max(2, len(str(_cardinality(feature) - 1)))
    return f"{name}_{code:0{width}d}"


def category_values(
    name: str,
    feature: Feature,
    latent: np.ndarray,
    settings: DataSettings,
    rng: np.random.Generator,
) -> list[object]:
    codes = category_codes(feature, latent, rng)
    missing = _missing(feature, len(latent), settings, rng)
    return [None if m else _spell(name, feature, c) for c, m in zip(codes, missing, strict=True)]


def token_values(
    name: str,
    feature: Feature,
    latent: np.ndarray,
    settings: DataSettings,
    rng: np.random.Generator,
) -> list[list[object]]:
    """1-3 tokens per row: the row's best-scoring clusters (random when signal is 0)."""
    hints, cardinality = feature.synthetic, _cardinality(feature)
    scores = _scores(latent, cardinality, hints.signal, rng)
    order = np.argsort(-scores, axis=1)
    counts = rng.integers(TOKENS_PER_ROW[0], TOKENS_PER_ROW[1] + 1, len(latent))
    counts = np.minimum(counts, cardinality)
    missing = _missing(feature, len(latent), settings, rng)
    return [
        [] if m else [_spell(name, feature, int(c)) for c in sorted(row[:k])]
        for row, k, m in zip(order, counts, missing, strict=True)
    ]


def continuous_values(
    feature: Feature,
    latent: np.ndarray,
    index: int,
    settings: DataSettings,
    rng: np.random.Generator,
) -> np.ndarray:
    """mean + spread x (a standardised latent coordinate mixed with noise by the signal),
    optionally exponentiated, kept within the feature's range."""
    hints, n = feature.synthetic, len(latent)
    coordinate = latent[:, index % latent.shape[1]] * np.sqrt(latent.shape[1])
    noise = 0.3
    mixed = (hints.signal * coordinate + noise * rng.normal(size=n)) / np.hypot(hints.signal, noise)
    values = hints.mean + hints.spread * mixed
    if hints.exponential:
        values = np.exp(values)
    if feature.range is not None:
        values = np.clip(values, *feature.range)
    return np.where(_missing(feature, n, settings, rng), np.nan, values).astype(np.float32)
