"""study.html stays light and quick with thousands of trials (the bench takes it to 50,000)."""

from __future__ import annotations

import re
import time

import studyfarm


def test_study_html_with_5000_trials_is_small_quick_and_complete(tmp_path):
    study = studyfarm.farm(tmp_path / "s", 5000)
    assert len(study.trials) == 5000
    t = time.perf_counter()
    page = study.html().read_text()
    took = time.perf_counter() - t
    assert took < 30, took
    assert len(page) < 2_000_000                                      # plots are PNGs, the leaderboard its top rows
    assert page.count("data:image/png;base64,") == 4                  # one plot per parameter, all 5,000 points in it
    rows = re.findall(r"<tr><td><a href=\"trials/(\d+)", page)
    assert len(rows) == 200 and int(rows[0]) == study.best.id
    assert "completed 5000" in page
