"""Synthetic interaction data with planted structure, and the on-disk data format.

Users and items get latent factors; side features are noisy views of those factors, item
exposure follows a Zipf popularity skew, and clicks follow the user-item affinity. A
model that learns the structure beats a popularity baseline by a measurable margin.

On-disk format (a directory; real data such as MovieLens or Ali-CCP can be converted to it):

- ``users.parquet``: user_id int64 (raw id), age float32 (nullable), country string,
  device string, zipcode string
- ``items.parquet``: item_id int64 (raw id), category string, brand string,
  price float32 (nullable)
- ``interactions.parquet``: user_id int64, item_id int64, timestamp int64 (seconds),
  click int8 (0/1); one row per impression
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.settings import DataSettings

USER_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "age": "float32",
    "country": "object",
    "device": "object",
    "zipcode": "object",
}
ITEM_COLUMNS: dict[str, str] = {
    "item_id": "int64",
    "category": "object",
    "brand": "object",
    "price": "float32",
}
INTERACTION_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "item_id": "int64",
    "timestamp": "int64",
    "click": "int8",
}
USER_ID_OFFSET = 100_000
ITEM_ID_OFFSET = 500_000
NUM_COUNTRIES = 12
NUM_CATEGORIES = 24
DEVICES = ("android", "ios", "web")
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class RawData:
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame


@dataclass(frozen=True)
class SplitData:
    users: pd.DataFrame
    items: pd.DataFrame
    train: pd.DataFrame
    valid: pd.DataFrame


class DataFormatError(ValueError):
    """A data file that does not follow the documented format."""


def _cluster_of(latent: np.ndarray, directions: np.ndarray) -> np.ndarray:
    return np.argmax(latent @ directions, axis=1)


def generate(settings: DataSettings) -> RawData:
    """Generate users, items and impressions with clicks, deterministically from the seed."""
    rng = np.random.default_rng(settings.seed)
    dim = settings.latent_dim
    n_users, n_items = settings.num_users, settings.num_items

    user_latent = rng.normal(0.0, 1.0, (n_users, dim)) / np.sqrt(dim)
    item_latent = rng.normal(0.0, 1.0, (n_items, dim)) / np.sqrt(dim)

    # Side features are noisy views of the latent factors, so they carry signal for
    # users and items the id embeddings have not seen.
    country_dirs = rng.normal(size=(dim, NUM_COUNTRIES))
    country = _cluster_of(user_latent + rng.normal(0, 0.15, user_latent.shape), country_dirs)
    device = rng.integers(0, len(DEVICES), n_users)
    zip_base = rng.integers(0, settings.num_zipcodes, NUM_COUNTRIES)
    zipcode = (zip_base[country] + rng.integers(0, 50, n_users)) % settings.num_zipcodes
    age = 35.0 + 25.0 * user_latent[:, 0] + rng.normal(0.0, 3.0, n_users)
    age = np.where(rng.random(n_users) < settings.missing_rate, np.nan, age)

    category_dirs = rng.normal(size=(dim, NUM_CATEGORIES))
    category = _cluster_of(item_latent + rng.normal(0, 0.15, item_latent.shape), category_dirs)
    # Brands are heavy-tailed (high cardinality, many rare values) and nested in categories.
    brand_rank = rng.zipf(1.3, n_items) % settings.num_brands
    brand = (category * 7919 + brand_rank) % settings.num_brands
    price = np.exp(3.0 + 0.8 * item_latent[:, 1] * np.sqrt(dim) + rng.normal(0, 0.3, n_items))
    price = np.where(rng.random(n_items) < settings.missing_rate, np.nan, price)

    popularity = 1.0 / np.arange(1, n_items + 1) ** settings.popularity_skew
    popularity = popularity[rng.permutation(n_items)]
    popularity /= popularity.sum()

    # Impressions: half from popularity (what a naive feed shows), half from affinity.
    n_imp = settings.impressions_per_user
    affinity = user_latent @ item_latent.T * 4.0
    affinity_probs = np.exp(affinity - affinity.max(axis=1, keepdims=True))
    affinity_probs /= affinity_probs.sum(axis=1, keepdims=True)
    user_idx = np.repeat(np.arange(n_users), n_imp)
    from_popularity = rng.random(n_users * n_imp) < 0.5
    item_idx = np.empty(n_users * n_imp, dtype=np.int64)
    item_idx[from_popularity] = rng.choice(n_items, from_popularity.sum(), p=popularity)
    cumulative = np.cumsum(affinity_probs, axis=1)
    draws = rng.random(n_users * n_imp)
    by_affinity = ~from_popularity
    rows = user_idx[by_affinity]
    item_idx[by_affinity] = np.minimum(
        (cumulative[rows] < draws[by_affinity, None]).sum(axis=1), n_items - 1
    )

    logit = (
        6.0 * np.sum(user_latent[user_idx] * item_latent[item_idx], axis=1)
        + 0.3 * np.log(popularity[item_idx] * n_items)
        - 1.5
    )
    click = (rng.random(logit.shape) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    timestamp = rng.integers(0, 30 * SECONDS_PER_DAY, logit.shape).astype(np.int64)

    user_ids = USER_ID_OFFSET + rng.permutation(n_users * 3)[:n_users]
    item_ids = ITEM_ID_OFFSET + rng.permutation(n_items * 3)[:n_items]
    users = pd.DataFrame(
        {
            "user_id": user_ids.astype(np.int64),
            "age": age.astype(np.float32),
            "country": [f"country_{c:02d}" for c in country],
            "device": [DEVICES[d] for d in device],
            "zipcode": [f"{z:05d}" for z in zipcode],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": item_ids.astype(np.int64),
            "category": [f"cat_{c:02d}" for c in category],
            "brand": [f"brand_{b:04d}" for b in brand],
            "price": price.astype(np.float32),
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": user_ids[user_idx].astype(np.int64),
            "item_id": item_ids[item_idx].astype(np.int64),
            "timestamp": timestamp,
            "click": click,
        }
    ).sort_values(["timestamp", "user_id"], kind="stable", ignore_index=True)
    return RawData(users=users, items=items, interactions=interactions)


def time_split(
    interactions: pd.DataFrame, validation_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the latest interactions: the model never sees the future it is scored on."""
    cutoff = interactions["timestamp"].quantile(1.0 - validation_fraction)
    train = interactions[interactions["timestamp"] <= cutoff].reset_index(drop=True)
    valid = interactions[interactions["timestamp"] > cutoff].reset_index(drop=True)
    if train.empty or valid.empty:
        raise DataFormatError(
            f"time split at validation_fraction={validation_fraction} left an empty side "
            f"({len(train)} train, {len(valid)} validation rows)"
        )
    return train, valid


def write_raw(data: RawData, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data.users.to_parquet(directory / "users.parquet", index=False)
    data.items.to_parquet(directory / "items.parquet", index=False)
    data.interactions.to_parquet(directory / "interactions.parquet", index=False)


def _read_table(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    if not path.exists():
        raise DataFormatError(f"{path} is missing (expected columns {sorted(columns)})")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise DataFormatError(f"{path} lacks column(s) {missing}; it has {list(frame.columns)}")
    frame = frame[list(columns)]
    for name, dtype in columns.items():
        if dtype == "object":
            frame[name] = frame[name].astype("string").astype(object)
            frame.loc[frame[name].isna(), name] = None
        elif dtype.startswith("int"):
            if frame[name].isna().any():
                raise DataFormatError(f"{path}: column {name!r} has missing values")
            frame[name] = frame[name].astype(dtype)
        else:
            frame[name] = frame[name].astype(dtype)
    return frame


def read_raw(directory: Path) -> RawData:
    """Read and check a data directory in the documented format (parquet or CSV)."""

    def pick(stem: str) -> Path:
        parquet, csv = directory / f"{stem}.parquet", directory / f"{stem}.csv"
        return parquet if parquet.exists() or not csv.exists() else csv

    users = _read_table(pick("users"), USER_COLUMNS)
    items = _read_table(pick("items"), ITEM_COLUMNS)
    interactions = _read_table(pick("interactions"), INTERACTION_COLUMNS)
    for table, key in ((users, "user_id"), (items, "item_id")):
        if table[key].duplicated().any():
            raise DataFormatError(f"{directory}: duplicate {key} values in the {key[:4]}s table")
    if not set(interactions["click"].unique()) <= {0, 1}:
        raise DataFormatError(f"{directory}: interactions.click must be 0 or 1")
    unknown_users = ~interactions["user_id"].isin(users["user_id"])
    unknown_items = ~interactions["item_id"].isin(items["item_id"])
    if unknown_users.any() or unknown_items.any():
        raise DataFormatError(
            f"{directory}: {int(unknown_users.sum())} interactions name unknown users and "
            f"{int(unknown_items.sum())} unknown items"
        )
    return RawData(users=users, items=items, interactions=interactions)


def split(data: RawData, validation_fraction: float) -> SplitData:
    train, valid = time_split(data.interactions, validation_fraction)
    return SplitData(users=data.users, items=data.items, train=train, valid=valid)
