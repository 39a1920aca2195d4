"""The Ray launcher on a local two-node Ray cluster (ray.cluster_utils.Cluster, 1 CPU and ~80 MB of
object store per node, so it fits 2 cores): a search completes; a node removed mid-search loses only
its running trial, and the study still completes with every trial accounted for.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

import babysit as bs
from babysit.search.storage import StudyStore, TrialState

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
from ray.cluster_utils import Cluster  # noqa: E402

MB = 1024 * 1024


@pytest.fixture(scope="module")
def two_nodes():
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)   # Ray's workers import babysit from this tree
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * MB,
                                                              "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, object_store_memory=80 * MB)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_ray_search_survives_a_removed_node(tmp_path, spiral_task, two_nodes):
    cluster, node = two_nodes
    d = tmp_path / "s"
    space = {"lr": bs.loguniform(1e-3, 0.3)}
    out: dict = {}

    def master():
        out["study"] = bs.search(spiral_task, space, stages=[bs.Stage(10, 2), bs.Stage(2, 3)], study_dir=d,
                                 fixed={"width": 16, "depth": 1}, workers=2, launcher="ray", stale_after=20.0)

    th = threading.Thread(target=master)
    th.start()
    node_pid = node.all_processes["raylet"][0].process.pid
    held_by_node = None
    deadline = time.time() + 120
    while time.time() < deadline and held_by_node is None:   # wait for a trial run by the second node's worker
        time.sleep(0.2)
        if not (d / "study.journal").exists():
            continue
        for t in StudyStore(d).trials(0, (TrialState.RUNNING,)):
            pid = (t.user_attrs.get("worker") or {}).get("pid")
            if pid and _child_of(pid, node_pid):
                held_by_node = t.user_attrs["id"]
    assert held_by_node is not None, "no trial ran on the second node"
    cluster.remove_node(node)                                  # the node is lost mid-trial
    th.join(240)
    assert not th.is_alive()
    study = out["study"]
    assert study.done and sorted(t.id for t in study.trials) == list(range(12))
    assert all(t.status in ("completed", "pruned", "early_stopped") for t in study.trials)
    lost = [t for t in StudyStore(d).trials(0) if t.user_attrs["id"] == held_by_node]
    assert len(lost) == 2 and lost[0].state == TrialState.FAIL and "reaped" in lost[0].user_attrs  # re-queued once
    assert next(t for t in study.trials if t.id == held_by_node).attempt == 1


def _child_of(pid: int, ancestor: int) -> bool:
    """Returns True when pid descends from ancestor (a Ray worker of that node's raylet)."""
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
    return False
