"""Real MovieLens-100k, from a pinned PyPI package, written in GroupLens' published layout.

    python -m pipeline.fetch_movielens [--out datasets/ml-100k]      (make movielens)

Nothing can be downloaded at run time except packages from PyPI, and the RecBole wheel
(`recbole==1.2.0`, MIT-licensed code) ships GroupLens' MovieLens-100k inside it as RecBole
"atomic" files (recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}). This script
downloads that wheel with `pip download --no-deps` (sha256 checked), reads those three
files from the zip and writes them back as an unzipped ml-100k release (u.data, u.user,
u.item, u.genre), which config/schemas/movielens.yaml reads unchanged.

The data is GroupLens' (F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets:
History and Context", ACM TiiS 5(4), 2015); its terms allow research use with that
acknowledgement and forbid redistribution: it is fetched, never committed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from recsys.settings import PROJECT_ROOT

WHEEL = "recbole==1.2.0"
WHEEL_SHA256 = "075820e2ea8f182ec4d30c4ec9067d5ac7b07c2f5e3ae1adeb8a5fbee2d4204d"
PREFIX = "recbole/dataset_example/ml-100k/ml-100k"
DEFAULT_OUT = PROJECT_ROOT / "datasets" / "ml-100k"
# u.genre's order: u.item carries one 0/1 flag per genre, in this order.
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")  # fmt: skip


class FetchError(RuntimeError):
    """The wheel could not be fetched or does not hold what it should."""


def download_wheel(directory: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(directory), WHEEL],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    wheels = sorted(directory.glob("recbole-*.whl"))
    if done.returncode != 0 or not wheels:
        raise FetchError(f"pip download {WHEEL} failed:\n{done.stdout}{done.stderr}")
    return wheels[0]


def check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise FetchError(f"{path.name} has sha256 {digest}, expected {expected}")


def atomic(archive: zipfile.ZipFile, suffix: str) -> pd.DataFrame:
    """One RecBole atomic file: tab-separated, header `name:type`."""
    frame = pd.read_csv(io.BytesIO(archive.read(f"{PREFIX}.{suffix}")), sep="\t", dtype=str,
                        keep_default_na=False)  # fmt: skip
    frame.columns = [column.split(":")[0] for column in frame.columns]
    return frame


def write_release(archive: zipfile.ZipFile, out: Path) -> dict[str, int]:
    """The three atomic files as GroupLens' ml-100k files; returns row counts."""
    ratings, users, items = (atomic(archive, s) for s in ("inter", "user", "item"))
    for name, frame, width in (("inter", ratings, 4), ("user", users, 5), ("item", items, 4)):
        if frame.shape[1] != width:
            raise FetchError(f"{PREFIX}.{name} has columns {list(frame.columns)}, expected {width}")
    out.mkdir(parents=True, exist_ok=True)
    # RecBole keeps GroupLens' column order in .inter and .user: written back as they are.
    ratings.to_csv(out / "u.data", sep="\t", header=False, index=False)
    users.to_csv(out / "u.user", sep="|", header=False, index=False)
    lines = []
    for row in items.itertuples(index=False):
        # GroupLens' u.item: id|title (year)|release date|video date|IMDb URL|19 flags.
        item_id, title, released, tokens = row
        suffix = f" ({released})" if released else ""
        flags = [str(int(genre in tokens.split())) for genre in GENRES]
        lines.append("|".join([item_id, f"{title}{suffix}", "", "", "", *flags]))
    (out / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1", "replace"))
    (out / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    return {"ratings": len(ratings), "users": len(users), "items": len(items)}


def fetch(out: Path, wheel: Path | None = None) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as scratch:
        wheel = wheel or download_wheel(Path(scratch))
        check_sha256(wheel, WHEEL_SHA256)
        with zipfile.ZipFile(wheel) as archive:
            return write_release(archive, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--wheel", type=Path, default=None, help="a downloaded recbole wheel")
    args = parser.parse_args(argv)
    try:
        counts = fetch(args.out, args.wheel)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"MovieLens-100k ({counts}) written to {args.out} in GroupLens' ml-100k layout")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
