"""The training loop: real training, the run directory, divergence, early stopping, observers."""

from __future__ import annotations

import math

import pytest
import torch

import babysit as bs
from babysit.errors import ConfigError, StoreError
from babysit.store import RunStore, list_checkpoints, parse_checkpoint_name

HP = {"optimizer": "adam", "lr": 0.01, "width": 32, "depth": 2, "batch_size": 32}


def test_tiny_mlp_really_learns_the_spiral(spiral_task, tmp_path):
    run = bs.train(spiral_task, HP, epochs=8, run_dir=tmp_path / "r")
    assert run.status == "completed" and run.diverged_at is None
    assert [r.epoch for r in run.history] == list(range(1, 9))
    first, last = run.history[0], run.history[-1]
    assert last.val_acc > 0.85, run.history
    assert last.train_loss < first.train_loss
    assert run.best_checkpoint is not None and run.best_checkpoint.exists()
    assert bs.evaluate(run.dir, "test").accuracy > 0.8


def test_run_directory_layout(spiral_task, tmp_path):
    run = bs.train(spiral_task, HP, epochs=5, run_dir=tmp_path / "r", checkpoint_interval=0)
    d = run.dir
    assert (d / "config.toml").is_file() and (d / "run.sqlite").is_file()
    cfg = bs.store.read_config(d)
    assert cfg["hp"]["lr"] == 0.01 and cfg["hp"]["reg"] == 0.0 and cfg["train"]["epochs"] == 5
    assert cfg["task"]["model"] == "mlp" and cfg["task"]["data"]["name"] == "spiral"
    assert cfg["task"]["reproducible"] is True
    meta = RunStore(d).meta()
    assert meta["schema_version"] == str(bs.store.SCHEMA_VERSION) and meta["status"] == "completed"
    assert meta["torch_version"] == torch.__version__ and meta["babysit_version"] == bs.__version__
    losses = RunStore(d).scalars("loss")
    steps_per_epoch = math.ceil(len(spiral_task.splits.train) / 32)
    assert len(losses) == 5 * steps_per_epoch
    assert losses[0][1] == pytest.approx(1 / steps_per_epoch)  # x-axis in (fractional) epochs
    names = [c.path.name for c in list_checkpoints(d)]
    # the best and the last two are kept, each named with its validation score
    best = max(run.history, key=lambda r: (r.val_acc, -r.epoch))
    assert run.best_checkpoint.name == f"epoch-{best.epoch:03d}_val-{best.val_acc:.4f}.pt"
    assert {f"epoch-004_val-{run.history[3].val_acc:.4f}.pt", f"epoch-005_val-{run.history[4].val_acc:.4f}.pt"} <= set(names)
    assert len(names) <= 3
    for n in names:
        epoch, val = parse_checkpoint_name(n)
        assert val == pytest.approx(run.history[epoch - 1].val_acc, abs=5e-5)


def test_checkpoint_holds_plain_data_only(spiral_task, tmp_path):
    run = bs.train(spiral_task, HP, epochs=1, run_dir=tmp_path / "r")
    ckpt = torch.load(run.best_checkpoint, weights_only=True)
    assert set(ckpt) >= {"model", "optimizer", "schedule", "rng", "epoch", "step"}


def test_same_seed_same_numbers_different_seed_different(spiral_task, tmp_path):
    a = bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "a", seed=3)
    b = bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "b", seed=3)
    c = bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "c", seed=4)
    key = lambda run: [(r.train_loss, r.val_acc, r.val_loss) for r in run.history]  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_divergence_stops_without_raising(spiral_task, tmp_path):
    run = bs.train(spiral_task, {"optimizer": "sgd", "lr": 1e12, "width": 32}, epochs=3, run_dir=tmp_path / "r")
    assert run.status == "diverged"
    assert isinstance(run.diverged_at, int) and run.diverged_at >= 1
    assert RunStore(run.dir).meta()["status"] == "diverged"
    # no checkpoint of non-finite weights is ever written
    for c in list_checkpoints(run.dir):
        state = torch.load(c.path, weights_only=True)["model"]
        assert all(torch.isfinite(t).all() for t in state.values())


def test_early_stopping_is_a_return_value(spiral_task, tmp_path):
    run = bs.train(spiral_task, {"optimizer": "sgd", "lr": 1e-9, "early_stop": 2, "width": 16},
                   epochs=20, run_dir=tmp_path / "r")
    assert run.status == "early_stopped"
    assert len(run.history) == 3  # best at epoch 1, no improvement for 2 epochs
    assert RunStore(run.dir).meta()["early_stopped_at"] == "3"


def test_lbfgs_runs_full_batch(spiral_task, tmp_path):
    run = bs.train(spiral_task, {"optimizer": "lbfgs", "width": 32}, epochs=4, run_dir=tmp_path / "r")
    assert run.status == "completed"
    assert len(RunStore(run.dir).scalars("loss")) == 4  # one closure step per epoch
    assert run.history[-1].val_acc > 0.6


def test_every_rule_and_schedule_trains(spiral_task, tmp_path):
    for i, hp in enumerate([{"optimizer": "momentum", "lr": 0.1, "schedule": "step", "step_every": 1},
                            {"optimizer": "nesterov", "lr": 0.1, "schedule": "exp", "exp_k": 0.2},
                            {"optimizer": "adagrad", "lr": 0.1, "schedule": "inv_t"},
                            {"optimizer": "rmsprop", "lr": 0.003, "schedule": "plateau"},
                            {"optimizer": "adam", "lr": 0.01, "momentum_start": 0.5, "momentum_end": 0.9,
                             "momentum_epochs": 2}]):
        run = bs.train(spiral_task, {**hp, "width": 32}, epochs=3, run_dir=tmp_path / str(i))
        assert run.status == "completed" and run.history[-1].val_acc > 0.5, (hp, run.history)


def test_step_schedule_changes_the_logged_lr(spiral_task, tmp_path):
    run = bs.train(spiral_task, {"optimizer": "momentum", "lr": 0.1, "schedule": "step", "step_every": 1,
                                 "step_factor": 0.5, "width": 8}, epochs=3, run_dir=tmp_path / "r")
    assert [r.lr for r in run.history] == pytest.approx([0.1, 0.05, 0.025])


def test_reg_is_in_the_objective(spiral_task, tmp_path):
    plain = bs.train(spiral_task, {**HP, "reg": 0.0}, epochs=1, run_dir=tmp_path / "a")
    heavy = bs.train(spiral_task, {**HP, "reg": 1.0}, epochs=1, run_dir=tmp_path / "b")
    first = lambda run: RunStore(run.dir).scalars("loss")[0][2]  # noqa: E731
    assert first(heavy) > first(plain) + 0.1


def test_observers_see_every_step_and_epoch(spiral_task, tmp_path):
    seen = {"step": 0, "epoch": 0, "end": None}

    class Obs:
        def on_step(self, r):
            seen["step"] += 1
            assert 0 < r.epoch <= 2 and r.lr == 0.01

        def on_epoch(self, r):
            seen["epoch"] += 1

        def on_end(self, run):
            seen["end"] = run.status

    bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "r", observers=[Obs()])
    assert seen["step"] == 2 * math.ceil(len(spiral_task.splits.train) / 32)
    assert seen["epoch"] == 2 and seen["end"] == "completed"


def test_generic_dataset_path_trains(spiral, tmp_path):
    class Plain(torch.utils.data.Dataset):
        def __init__(self, ds):
            self.ds = ds

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            return self.ds[i]

    splits = bs.data.Splits(Plain(spiral.train), Plain(spiral.val), None, spiral.num_classes, spiral.input_shape)
    task = bs.Task(build="mlp", data=splits)
    run = bs.train(task, HP, epochs=3, run_dir=tmp_path / "r")
    assert run.history[-1].val_acc > 0.6
    assert bs.store.read_config(run.dir)["task"]["reproducible"] is False


def test_load_and_evaluate(spiral_task, tmp_path):
    run = bs.train(spiral_task, HP, epochs=3, run_dir=tmp_path / "r")
    model = bs.load(run.dir)
    assert not model.training
    x, y = bs.data.tensors(spiral_task.splits.val)
    acc = (model(x).argmax(1) == y).float().mean().item()
    best = max(run.history, key=lambda r: (r.val_acc, -r.epoch))
    assert acc == pytest.approx(best.val_acc)
    ev = bs.evaluate(run.dir, spiral_task.splits.val)
    assert ev.accuracy == pytest.approx(best.val_acc) and ev.loss > 0 and ev.examples == len(y)
    last = bs.load(run.dir, last=True)
    assert (last(x).argmax(1) == y).float().mean().item() == pytest.approx(run.history[-1].val_acc)
    assert bs.evaluate(model, spiral_task.splits.val).accuracy == pytest.approx(acc)


def test_load_needs_the_task_for_an_unnamed_model(spiral, tmp_path):
    task = bs.Task(build=lambda hp: torch.nn.Sequential(torch.nn.Linear(2, 3)), data=spiral)
    run = bs.train(task, {"lr": 0.1}, epochs=1, run_dir=tmp_path / "r")
    cfg = bs.store.read_config(run.dir)
    assert cfg["task"]["reproducible"] is False and "lambda" in cfg["task"]["not_reproducible_because"]
    with pytest.raises(StoreError, match="pass the task"):
        bs.load(run.dir)
    assert isinstance(bs.load(run.dir, task=task), torch.nn.Module)


@pytest.mark.parametrize("kw, hp, match", [
    ({"epochs": 0}, {}, "epochs=0"),
    ({"epochs": 1}, {"lr": -0.1}, r"hp\['lr'\]=-0.1.*> 0"),
    ({"epochs": 1}, {"reg": -1.0}, r"hp\['reg'\]=-1.0"),
    ({"epochs": 1}, {"batch_size": 0}, r"hp\['batch_size'\]=0"),
    ({"epochs": 1, "batch_size": 0}, {}, r"batch_size"),
    ({"epochs": 1}, {"optimizer": "adamw"}, "adagrad, adam, lbfgs, momentum, nesterov, rmsprop, sgd"),
    ({"epochs": 1}, {"schedule": "cosine"}, "constant"),
    ({"epochs": 1}, {"activation": "gelu"}, "relu"),
])
def test_bad_input_names_field_and_value(spiral_task, tmp_path, kw, hp, match):
    with pytest.raises(ConfigError, match=match):
        bs.train(spiral_task, hp, run_dir=tmp_path / "r", **kw)
    assert not list_checkpoints(tmp_path / "r")


def test_wrong_output_width_is_named_before_training(spiral, tmp_path):
    task = bs.Task(build=lambda hp: torch.nn.Linear(2, 7), data=spiral)
    with pytest.raises(ConfigError, match="7 columns but the data has 3 classes"):
        bs.train(task, {}, epochs=1, run_dir=tmp_path / "r")
    task = bs.Task(build=lambda hp: torch.nn.Linear(5, 3), data=spiral)
    with pytest.raises(bs.UserCodeError, match=r"on a batch of inputs of shape \(2, 2\)"):
        bs.train(task, {}, epochs=1, run_dir=tmp_path / "r")


def test_existing_run_dir_is_refused_unless_resume_or_force(spiral_task, tmp_path):
    d = tmp_path / "r"
    bs.train(spiral_task, HP, epochs=1, run_dir=d)
    with pytest.raises(StoreError, match="resume=True.*force=True"):
        bs.train(spiral_task, HP, epochs=1, run_dir=d)
    with pytest.raises(StoreError, match=r"different configuration \(hp.lr: 0.01 -> 0.02\)"):
        bs.train(spiral_task, {**HP, "lr": 0.02}, epochs=2, run_dir=d, resume=True)
    run = bs.train(spiral_task, {**HP, "lr": 0.02}, epochs=1, run_dir=d, force=True)
    assert run.status == "completed" and bs.store.read_config(d)["hp"]["lr"] == 0.02
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a babysit run directory"):
        bs.train(spiral_task, HP, epochs=1, run_dir=tmp_path / "other")


def test_resume_in_process_extends_a_finished_run(spiral_task, tmp_path):
    full = bs.train(spiral_task, HP, epochs=4, run_dir=tmp_path / "full")
    bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "part")
    resumed = bs.train(spiral_task, HP, epochs=4, run_dir=tmp_path / "part", resume=True)
    strip = lambda run: [(r.epoch, r.train_loss, r.train_acc, r.val_loss, r.val_acc, r.lr) for r in run.history]  # noqa: E731
    assert strip(resumed) == strip(full)


def test_clip_norm_bounds_the_update(spiral_task):
    torch.manual_seed(0)
    model = spiral_task.build_model({"width": 16})
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = bs.data.tensors(spiral_task.splits.train)
    bs.step.train_step(model, x * 100, y, bs.losses.softmax_loss, [], 0.0, opt, clip_norm=1e-3)
    moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert moved.item() == pytest.approx(1e-3, rel=1e-3)


def test_checkpoint_interval_defers_writes_but_keeps_the_best_and_the_last(spiral_task, tmp_path):
    run = bs.train(spiral_task, HP, epochs=6, run_dir=tmp_path / "r", checkpoint_interval=3600)
    written = {c.epoch for c in list_checkpoints(run.dir)}
    best = max(run.history, key=lambda r: (r.val_acc, -r.epoch))
    # the first epoch is written at once, then nothing until the end: the best and the last
    assert written == {1, best.epoch, 6} or written == {best.epoch, 6}
    assert run.best_checkpoint.name.startswith(f"epoch-{best.epoch:03d}_")
    with pytest.raises(ConfigError, match="checkpoint_interval=-1"):
        bs.train(spiral_task, HP, epochs=1, run_dir=tmp_path / "x", checkpoint_interval=-1)


def test_resume_skips_a_damaged_latest_checkpoint(spiral_task, tmp_path):
    full = bs.train(spiral_task, HP, epochs=4, run_dir=tmp_path / "full")
    part = bs.train(spiral_task, HP, epochs=3, run_dir=tmp_path / "part", checkpoint_interval=0)
    latest = list_checkpoints(part.dir)[-1]
    assert latest.epoch == 3
    latest.path.write_bytes(b"truncated by a power cut")
    resumed = bs.train(spiral_task, HP, epochs=4, run_dir=part.dir, resume=True)
    assert [r.val_acc for r in resumed.history] == [r.val_acc for r in full.history]


def build_for_reload(hp):
    """A module-level build function: importable again, so its runs are reproducible."""
    return bs.models.mlp((2,), 3, hidden=(16,))


def test_a_module_level_build_function_is_recorded_and_reloaded(spiral, tmp_path):
    task = bs.Task(build=build_for_reload, data=spiral)
    run = bs.train(task, {"optimizer": "adam", "lr": 0.01}, epochs=2, run_dir=tmp_path / "r")
    cfg = bs.store.read_config(run.dir)
    assert cfg["task"]["build"].endswith(":build_for_reload") and cfg["task"]["reproducible"] is True
    model = bs.load(run.dir)  # rebuilt from config.toml alone
    assert bs.evaluate(model, spiral.val).accuracy == pytest.approx(run.best_val_acc)
