"""One table of statuses and exit codes; one Stop object that every reason to end a run sets."""

from __future__ import annotations

import pytest

import babysit as bs
from babysit.status import EXIT_CODES, STATUSES, Stop, exit_code


def test_the_table_of_statuses_and_exit_codes():
    assert set(STATUSES) == {"completed", "early_stopped", "diverged", "failed", "interrupted", "pruned"}
    assert EXIT_CODES == {"completed": 0, "early_stopped": 0, "diverged": 1, "failed": 3, "interrupted": 130,
                          "pruned": None}
    assert exit_code("early_stopped") == 0 and exit_code("pruned") == 1


def test_the_first_reason_wins_and_conditions_set_it():
    stop = Stop(lambda r: ("pruned", "hopeless") if r == "bad" else None)
    assert not stop and not stop.check("fine")
    assert stop.check("bad") and stop.reason == "pruned" and stop.why == "hopeless"
    stop.set("interrupted")
    assert stop.reason == "pruned"
    with pytest.raises(ValueError, match="reason must be one of"):
        Stop().set("bored")


def test_a_stop_condition_prunes_a_run_at_its_epoch(spiral_task, tmp_path):
    stop = Stop(lambda r: ("pruned", "killed from the study") if isinstance(r, bs.EpochRecord) else None)
    run = bs.train(spiral_task, {"width": 8}, epochs=5, run_dir=tmp_path / "r", stop=stop)
    assert run.status == "pruned" and len(run.history) == 1
    assert bs.store.RunStore(run.dir).meta()["stop_reason"] == "killed from the study"


def test_a_stop_set_from_outside_ends_the_run_as_interrupted(spiral_task, tmp_path):
    stop = Stop()
    stop.set("interrupted", "test")
    run = bs.train(spiral_task, {"width": 8}, epochs=3, run_dir=tmp_path / "r", stop=stop)
    assert run.status == "interrupted" and run.history == ()


class Boom(Exception):
    pass


def test_the_users_exception_is_recorded_then_re_raised(spiral, tmp_path):
    import torch

    class Flaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.calls = torch.nn.Linear(2, 3), 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 30:
                raise Boom("the user's bug")
            return self.fc(x)

    task = bs.Task(build=lambda hp: Flaky(), data=spiral)
    with pytest.raises(Boom):
        bs.train(task, {"lr": 0.1}, epochs=3, run_dir=tmp_path / "r")
    meta = bs.store.RunStore(tmp_path / "r").meta()
    assert meta["status"] == "failed" and "Boom: the user's bug" in meta["error"] and "test_status.py" in meta["error"]


def test_a_step_condition_stops_within_the_epoch(spiral_task, tmp_path):
    stop = Stop(lambda r: ("pruned", "loss above 3x chance") if isinstance(r, bs.StepRecord) and r.step == 3 else None)
    run = bs.train(spiral_task, {"width": 8}, epochs=2, run_dir=tmp_path / "r", stop=stop)
    assert run.status == "pruned" and len(bs.store.RunStore(run.dir).scalars("loss")) == 3
