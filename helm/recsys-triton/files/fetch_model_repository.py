"""Fetch a versioned model-repository archive into the pod's model volume (initContainer).

Environment:
  ARCHIVE_URL      http(s):// (or file://) URL of a .tar.gz holding the Triton model
                   repository: model directories at the top level, or under one directory.
  ARCHIVE_SHA256   expected hex sha256 of the archive; empty skips the check.
  ARCHIVE_VERSION  the version label, recorded next to the models.
  TARGET_DIR       where the models go (the emptyDir Triton reads as --model-repository).

Only the standard library is used, so any image with python3 (>= 3.8) can run it. The
archive is extracted member by member after checking that every path stays inside the target
and that there are no links or device files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

MARKER = ".recsys-model-version"
CHUNK = 1 << 20


def log(message: str) -> None:
    print(f"[fetch-model-repository] {message}", flush=True)


def download(url: str, dest: Path) -> str:
    """Stream `url` to `dest`; return the sha256 of what was written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def safe_members(tar: tarfile.TarFile, root: Path) -> list[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        if not (member.isfile() or member.isdir()):
            raise ValueError(f"refusing archive member {member.name!r}: not a file or directory")
        target = (root / member.name).resolve()
        if target != root and root not in target.parents:
            raise ValueError(f"refusing archive member {member.name!r}: outside the target")
        member.mode = (member.mode | 0o600) & 0o755  # no setuid/setgid, always owner-writable
        members.append(member)
    return members


def repository_root(extracted: Path) -> Path:
    """The directory whose children are the model directories."""
    entries = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not (entries[0] / "config.pbtxt").exists():
        return entries[0]
    return extracted


def main() -> int:
    url = os.environ["ARCHIVE_URL"]
    expected = os.environ.get("ARCHIVE_SHA256", "").strip().lower()
    version = os.environ.get("ARCHIVE_VERSION", "")
    target = Path(os.environ["TARGET_DIR"]).resolve()
    target.mkdir(parents=True, exist_ok=True)
    stamp = f"{version} {url} {expected}"

    marker = target / MARKER
    if marker.exists() and marker.read_text() == stamp:
        log(f"version {version} already in {target}")
        return 0

    with tempfile.TemporaryDirectory(dir=target, prefix=".fetch-") as tmp:
        tmp_dir = Path(tmp)
        archive = tmp_dir / "archive.tar.gz"
        log(f"downloading {url}")
        actual = download(url, archive)
        if expected and actual != expected:
            log(f"sha256 mismatch: expected {expected}, got {actual}")
            return 1
        staging = tmp_dir / "staging"
        staging.mkdir()
        with tarfile.open(archive, mode="r:*") as tar:
            members = safe_members(tar, staging.resolve())
            if hasattr(tarfile, "data_filter"):  # Python >= 3.12 and recent patch releases
                tar.extractall(staging.resolve(), members=members, filter="data")
            else:
                tar.extractall(staging.resolve(), members=members)
        root = repository_root(staging)
        configs = sorted(p.parent.name for p in root.glob("*/config.pbtxt"))
        if not configs:
            log("the archive holds no <model>/config.pbtxt")
            return 1
        for old in target.iterdir():
            if old.name.startswith(".fetch-"):
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        for entry in root.iterdir():
            shutil.move(str(entry), str(target / entry.name))
    marker.write_text(stamp)
    log(f"version {version}: {', '.join(configs)} in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
