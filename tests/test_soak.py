"""The soak command in quick mode against the session's server: it measures saturation,
drives ~70% of it, and reports zero errors and bounded RSS growth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving import soak
from serving.launcher import TritonServer
from tests.conftest import TrainedSet

pytestmark = pytest.mark.server


def test_quick_soak_reports_no_errors_and_bounded_rss_growth(
    trained: TrainedSet, triton: TritonServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert triton.process is not None
    report_path = tmp_path / "soak.json"
    code = soak.main(
        ["--url", triton.grpc_url, "--server-pid", str(triton.process.pid),
         "--repository", str(trained.repository), "--quick", "--json", str(report_path)]
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert report["errors"] == 0 and report["requests"] > 0
    assert report["target_rps"] == pytest.approx(0.7 * report["saturation_rps"])
    assert report["rss_growth"] < 0.05
    assert "PASS" in printed and "server RSS after warm-up" in printed


def test_rss_growth_compares_medians_of_the_first_and_last_windows() -> None:
    samples = [(float(t), 1000 + (500 if t == 12 else 0) + t) for t in range(40)]
    baseline, final, growth = soak.rss_growth(samples, after=10.0)
    assert (baseline, final) == (1011, 1038)  # the one spike at t=12 does not count
    assert growth == pytest.approx(27 / 1011)
