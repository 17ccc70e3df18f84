"""The canonical directory: users/items/interactions .parquet holding the canonical frames
(interactions with the TIMESTAMP and LABEL columns), written atomically."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from datagen.checks import canonical_entity, canonical_interactions, check_references
from datagen.frames import DataFormatError, RawData
from recsys.contract import LABEL, TIMESTAMP
from recsys.schema import FeatureSchema, Label

FILES = ("users", "items", "interactions")


def write_canonical(data: RawData, directory: Path) -> None:
    """Write the three frames into a temporary directory beside `directory`, then swap it
    in: readers see the old directory or the complete new one, never a half-written one."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name in FILES:
            getattr(data, name).to_parquet(staging / f"{name}.parquet", index=False)
        if directory.exists():
            retired = staging.with_name(staging.name + ".old")
            directory.rename(retired)
            staging.rename(directory)
            shutil.rmtree(retired)
        else:
            staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_canonical(schema: FeatureSchema, directory: Path) -> RawData:
    """Read and check a directory written by write_canonical."""
    frames: dict[str, pd.DataFrame] = {}
    for name in FILES:
        path = Path(directory) / f"{name}.parquet"
        if not path.exists():
            raise DataFormatError(
                f"{path}: missing file (a canonical directory holds "
                f"{', '.join(f + '.parquet' for f in FILES)})"
            )
        frames[name] = pd.read_parquet(path)
    where = {name: str(Path(directory) / f"{name}.parquet") for name in FILES}
    users = canonical_entity(frames["users"], schema.users, where["users"])
    items = canonical_entity(frames["items"], schema.items, where["items"])
    renamed = frames["interactions"].rename(
        columns={
            schema.users.id: schema.interactions.user,
            schema.items.id: schema.interactions.item,
        }
    )
    interactions = canonical_interactions(
        renamed,
        schema,
        where["interactions"],
        label=Label(column=LABEL),
        timestamp_column=TIMESTAMP,
    )
    check_references(interactions, users, items, schema, where["interactions"])
    return RawData(users=users, items=items, interactions=interactions)
