"""`make demo`, reduced to one epoch and a few thousand events: every step runs and the page is written."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.paths import REPO


@pytest.mark.slow
def test_reduced_demo_writes_the_report(tmp_path):
    demo = tmp_path / "demo"
    result = subprocess.run(["make", "-s", "demo", f"DEMO={demo}", "DEMO_EPOCHS=1", "DEMO_BEST_EPOCHS=1",
                             "DEMO_WH_EPOCHS=1", "DEMO_EVENTS=3000", "DEMO_MAX_EVENTS=1000", "DEMO_TRAIN_EVENTS=4000",
                             "DEMO_BOOTSTRAP=10", "DEMO_ANOMALY_OPTS=--no-references"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {demo}/report.html" in result.stdout
    page = (demo / "report.html").read_text()
    for text in ("MC vs MC (reference)", "VAE+D", "hzg150", "c1n2_wh_500_100", "2-3b", "max_sic_vs_base"):
        assert text in page, text
    combined = json.loads((demo / "metrics.json").read_text())
    assert set(combined) == {"zgamma_generation", "zgamma_anomaly", "wh1lbb_anomaly"}
    assert set(combined["zgamma_generation"]["comparisons"]) == {"mc_vs_mc", "VAE", "VAE+D", "best.yaml"}
    assert {r["region"] for r in combined["wh1lbb_anomaly"]["region_efficiency"]} == {"preselection", "mid", "2-3b"}
