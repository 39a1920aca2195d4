"""report: a self-contained page (findings first, figures inline, everything escaped), live rewrites off the
training thread, the CLI (report, diagnose, export), TensorBoard export read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import re
import shutil
import threading

import pytest

import babysit as bs
from babysit.cli import main
from babysit.report import ReportObserver, report

HP = {"optimizer": "adam", "lr": 0.01, "width": 16, "depth": 2, "batch_size": 32}
EVIL = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def watched_run(spiral, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    task = bs.Task(build="mlp", data=spiral, name=EVIL)
    return bs.train(task, HP, epochs=3, run_dir=tmp_path_factory.mktemp("rep") / "watched")


def _images(html):
    return re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', html)


def test_a_watched_run_gets_a_self_contained_page_with_findings_first(watched_run):
    path = report(watched_run.dir)
    assert path == watched_run.dir / "report.html"
    html = path.read_text()
    assert len(_images(html)) >= 6  # loss, accuracy, ratios, two heat-maps, units, first layer
    assert html.index('id="findings"') < html.index('id="loss"') < html.index('id="accuracy"')
    assert 'id="ratios"' in html and 'id="act"' in html and 'id="grad"' in html and 'id="first-layer"' in html
    assert "src=\"http" not in html and "<script" not in html  # nothing fetched, nothing executed
    assert "&lt;script&gt;" in html  # the task's name, escaped
    assert 'http-equiv="refresh"' not in html  # a finished run does not reload


def test_a_run_without_telemetry_and_a_schema_1_run_still_render(spiral_task, tmp_path):
    from test_store_schema import V1_RUN

    plain = bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "plain", monitor=False)
    html = report(plain.dir).read_text()
    assert len(_images(html)) == 2 and "rules skipped" in html and 'id="ratios"' not in html
    shutil.copytree(V1_RUN, tmp_path / "old")
    assert len(_images(report(tmp_path / "old").read_text())) == 2


def test_several_runs_are_overlaid(watched_run, spiral_task, tmp_path):
    other = bs.train(spiral_task, {**HP, "lr": 0.001}, epochs=2, run_dir=tmp_path / "slow")
    path = report(watched_run.dir, other.dir, out=tmp_path / "cmp.html")
    html = path.read_text()
    assert "watched vs slow" in html and html.count('class="findings"') == 2


def test_the_live_page_refreshes_and_is_written_off_the_training_thread(spiral_task, tmp_path, monkeypatch):
    import importlib

    threads = []
    rep = importlib.import_module("babysit.report")  # the package: bs.report is the function

    real = rep.report

    def spy(*a, **k):
        threads.append(threading.current_thread().name)
        path = real(*a, **k)
        threads.append("refresh" in path.read_text())
        return path

    monkeypatch.setattr(rep, "report", spy)
    obs = ReportObserver(tmp_path / "r", every=3600)
    bs.train(spiral_task, HP, epochs=3, run_dir=tmp_path / "r", observers=[obs])
    assert threads[0] == "babysit-report" and threads[1] is True  # epoch 1: live page, background thread
    assert len(threads) == 4 and threads[3] is False  # then only the final page: at most one per `every`
    assert obs.written == 2 and obs.error is None


def test_cli_report_diagnose_and_exit_codes(watched_run, spiral_task, tmp_path, capsys):
    assert main(["report", str(watched_run.dir)]) == 0
    assert capsys.readouterr().out.strip() == str(watched_run.dir / "report.html")
    assert main(["diagnose", str(watched_run.dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"findings", "skipped"}
    sick = bs.train(spiral_task, {"optimizer": "sgd", "lr": 1e12, "width": 16}, epochs=2, run_dir=tmp_path / "nan")
    assert sick.status == "diverged"
    assert main(["diagnose", str(sick.dir)]) == 1
    assert "diverged" in capsys.readouterr().out
    assert main(["diagnose", str(tmp_path / "missing")]) == 2


def test_export_to_tensorboard_is_read_back_by_tensorboard(watched_run, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["export", "--tensorboard", str(watched_run.dir), "--out", str(tmp_path / "tb")]) == 0
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    h = bs.store.read_history(watched_run.dir)
    assert len(acc.Scalars("loss")) == len(h.loss)
    assert [e.value for e in acc.Scalars("epoch/val_acc")] == pytest.approx([e.val_acc for e in h.epochs])
    assert "update_ratio/fc1.weight" in tags["scalars"]
    assert "act/fc1" in tags["histograms"] and acc.Histograms("act/fc1")[0].histogram_value.num > 0
