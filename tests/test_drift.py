"""The drift report on request logs: shifted features are named, unshifted traffic is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import compare, counts_from_log, psi
from monitoring.profile import ReferenceProfile, categorical_profile
from recsys.contract import PROFILE_FILE
from recsys.settings import MonitoringSettings
from tests.conftest import TrainedSet

SETTINGS = MonitoringSettings()


@pytest.fixture(scope="module")
def profile_path(trained: TrainedSet) -> Path:
    return trained.artifacts / "models" / PROFILE_FILE


def request_log(trained: TrainedSet, path: Path, shift: dict[str, object] | None = None) -> Path:
    """Validation traffic as raw requests (later in time than what the profile saw)."""
    rows = trained.data.valid[["user_id"]].merge(trained.data.users, on="user_id", how="left")
    rows = rows.sample(n=3000, random_state=1)
    for column, change in (shift or {}).items():
        rows[column] = change(rows[column]) if callable(change) else change
    with path.open("w") as handle:
        for record in rows.to_dict(orient="records"):
            clean = {k: (None if isinstance(v, float) and np.isnan(v) else v)
                     for k, v in record.items()}  # fmt: skip
            handle.write(json.dumps(clean) + "\n")
    return path


def run_drift(profile: Path, log: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "monitoring.drift",
            "--profile",
            str(profile),
            "--request-log",
            str(log),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_psi_is_zero_for_identical_and_grows_with_shift() -> None:
    same = np.array([0.5, 0.5])
    assert psi(same, same) == pytest.approx(0.0)
    assert psi(same, np.array([0.6, 0.4])) < psi(same, np.array([0.9, 0.1]))


def test_unseen_categories_land_in_other() -> None:
    profile = categorical_profile("device", np.array(["ios", "web", None], dtype=object))
    assert profile.counts(np.array(["ios", "toaster", None], dtype=object)) == {
        "ios": 1, "web": 0, "__other__": 1, "__missing__": 1}  # fmt: skip


def test_unshifted_traffic_flags_nothing(
    trained: TrainedSet, profile_path: Path, tmp_path: Path
) -> None:
    result = run_drift(profile_path, request_log(trained, tmp_path / "log.jsonl"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "drifting features: none" in result.stdout


def test_shifted_age_and_new_devices_are_named_and_nothing_else(
    trained: TrainedSet, profile_path: Path, tmp_path: Path
) -> None:
    log = request_log(trained, tmp_path / "log.jsonl", {
        "age": lambda s: s + 25.0,
        "device": lambda s: pd.Series(np.where(np.arange(len(s)) % 2, "smart-tv", s),
                                      index=s.index),
    })  # fmt: skip
    result = run_drift(profile_path, log)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "drifting features: age, device" in result.stdout
    profile = ReferenceProfile.load(profile_path)
    flagged = {r.feature for r in compare(profile, counts_from_log(profile, log), SETTINGS)
               if r.drifting}  # fmt: skip
    assert flagged == {"age", "device"}


def test_too_little_traffic_is_not_judged(trained: TrainedSet, profile_path: Path) -> None:
    profile = ReferenceProfile.load(profile_path)
    results = compare(profile, {"age": {"q0": 5.0}}, SETTINGS)
    assert not any(r.drifting for r in results)
    assert next(r for r in results if r.feature == "age").live_count == 5


def test_a_missing_profile_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text("{}\n")
    result = run_drift(tmp_path / "nope.json", log)
    assert result.returncode == 2
    assert "cannot read reference profile" in result.stderr
