"""Ensembles: members from runs and checkpoints, averaged probabilities, the gain table, bad members."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.ensemble import Ensemble, Member, paired_interval, train_many
from babysit.errors import ConfigError, StoreError
from babysit.store import list_checkpoints
from babysit.train import train

HP = {"optimizer": "adam", "lr": 0.01, "width": 32, "depth": 2, "batch_size": 32}


@pytest.fixture(scope="module")
def runs(spiral_task, tmp_path_factory):
    torch.set_num_threads(1)
    return train_many(spiral_task, HP, seeds=[0, 1, 2, 3], epochs=6, run_dir=tmp_path_factory.mktemp("many"),
                      checkpoint_interval=0, keep_last=3)


def test_train_many_in_parallel_workers_gives_the_runs_one_process_gives(spiral_task, tmp_path):
    """workers=2: two forked processes train the seeds side by side; each run is the one train() gives."""
    par = train_many(spiral_task, HP, seeds=[5, 6, 7], epochs=3, run_dir=tmp_path / "par", workers=2, threads=1)
    one = train(spiral_task, HP, epochs=3, run_dir=tmp_path / "one", seed=6, threads=1)
    assert [r.dir.name for r in par] == ["seed-5", "seed-6", "seed-7"] and all(r.status == "completed" for r in par)
    assert [h.val_loss for h in par[1].history] == [h.val_loss for h in one.history]
    assert par[1].best_checkpoint is not None and par[1].best_checkpoint.name == one.best_checkpoint.name
    with pytest.raises(bs.ConfigError, match="workers"):
        train_many(spiral_task, HP, seeds=[0], epochs=1, run_dir=tmp_path / "x", workers=0)


def _fails_for_seed_1(hp):
    if torch.initial_seed() == 1:
        raise ValueError("seed 1 is broken")
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 3))


def test_a_seed_that_fails_in_a_worker_is_named_and_the_others_finish(spiral, tmp_path):
    task = bs.Task(build=_fails_for_seed_1, data=spiral)
    with pytest.raises(bs.UserCodeError, match="seed 1 failed.*seed 1 is broken.*1 of 3"):
        train_many(task, {"lr": 0.1}, seeds=[0, 1, 2], epochs=1, run_dir=tmp_path / "m", workers=2, threads=1)
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"seed-0", "seed-2"}


def test_train_many_gives_one_run_directory_per_seed(runs):
    assert [r.dir.name for r in runs] == ["seed-0", "seed-1", "seed-2", "seed-3"]
    assert all(r.status == "completed" for r in runs)
    assert len({r.history[-1].val_loss for r in runs}) == 4  # different inits, different numbers


def test_an_ensemble_of_different_inits_is_at_least_as_good_as_its_mean_member(runs):
    report = Ensemble.from_runs(runs).evaluate("test")
    accs = [m.accuracy for m in report.members]
    assert len(set(accs)) > 1  # the members really differ
    assert report.accuracy >= sum(accs) / len(accs)
    assert report.nll < sum(m.nll for m in report.members) / len(accs)
    g = report.gain_acc_over_mean
    assert g.low <= g.value <= g.high and g.value == pytest.approx(report.accuracy - sum(accs) / len(accs), abs=1e-6)


def test_the_size_curve_adds_members_in_order_of_validation_score(runs):
    report = Ensemble.from_runs(runs).evaluate("test")
    vals = [m.val_acc for m in report.members]
    assert vals == sorted(vals, reverse=True) and report.best == report.members[0].name
    assert [k for k, _, _ in report.sizes] == [1, 2, 3, 4]
    assert report.sizes[0][1] == pytest.approx(report.members[0].accuracy)  # one member: the best by validation
    assert report.sizes[-1][1] == pytest.approx(report.accuracy)
    assert report.gain_acc.value == pytest.approx(report.accuracy - report.members[0].accuracy, abs=1e-6)
    assert report.gain_nll.value == pytest.approx(report.members[0].nll - report.nll, abs=1e-6)
    text = report.table()
    assert "gain in accuracy over the best member" in text and report.best in text


def test_probabilities_are_averaged_or_scores_on_request(runs, spiral):
    x, _ = bs.data.tensors(spiral.test, limit=20)
    p = Ensemble.from_runs(runs).predict_proba(x)
    s = Ensemble.from_runs(runs, average="score").predict_proba(x)
    torch.testing.assert_close(p.sum(1), torch.ones(20))
    manual = torch.stack([torch.softmax(bs.load(r.dir)(x), 1) for r in runs]).mean(0)
    torch.testing.assert_close(p, manual)
    assert not torch.allclose(p, s)
    with pytest.raises(ConfigError, match="average='mean'"):
        Ensemble.from_runs(runs, average="mean")


def test_checkpoints_of_one_run(runs):
    ens = Ensemble.from_run(runs[0], last=3)
    assert [m.name.split("/")[-1][:9] for m in ens.members] == ["epoch-004", "epoch-005", "epoch-006"]
    with pytest.warns(UserWarning, match="keeps 3 checkpoint.*keep_last=5"):
        assert len(Ensemble.from_run(runs[0], last=5)) == 3


def test_snapshot_run_gives_its_cycle_ends(spiral_task, tmp_path):
    run = bs.train(spiral_task, {**HP, "snapshots": 2}, epochs=4, run_dir=tmp_path / "s", checkpoint_interval=0)
    ens = Ensemble.from_run(run, last=2)
    assert [m.name.split("/")[-1][:9] for m in ens.members] == ["epoch-002", "epoch-004"]


def test_a_checkpoint_that_does_not_load_is_skipped_by_name_or_fatal_when_alone(runs, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(runs[0].dir, d)
    ckpts = [c.path for c in list_checkpoints(d)]
    ckpts[0].write_bytes(ckpts[0].read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match=ckpts[0].name):
        ens = Ensemble.from_checkpoints(ckpts)
    assert len(ens) == len(ckpts) - 1
    with pytest.raises(StoreError, match=f"no member of the ensemble loads.*{ckpts[0].name}"):
        Ensemble.from_checkpoints([ckpts[0]])


def test_members_with_different_output_sizes_are_named(spiral_task):
    with pytest.raises(ConfigError, match="a gives 3 scores, b gives 4 scores"):
        Ensemble([Member("a", nn.Linear(2, 3)), Member("b", nn.Linear(2, 4))], spiral_task)


def test_paired_interval_brackets_the_mean_with_the_right_width():
    torch.manual_seed(0)
    d = torch.randn(2000) + 0.3
    g = paired_interval(d, repeats=1000)
    assert g.low < 0.3 < g.high and g.low < g.value < g.high
    assert (g.high - g.low) == pytest.approx(2 * 1.96 / 2000 ** 0.5, rel=0.15)
    c = paired_interval(torch.full((50,), 0.25))
    assert c.low == pytest.approx(0.25) and c.high == pytest.approx(0.25)


def test_distillation_moves_the_student_toward_the_ensemble(runs, spiral_task, tmp_path):
    from babysit.ensemble import distill
    from babysit.store import RunStore

    ens = Ensemble.from_runs(runs)
    report = distill(ens, spiral_task, HP, temperature=4.0, alpha=0.9, epochs=6, run_dir=tmp_path / "d",
                     seed=7, checkpoint_interval=0)
    assert report.student_kl < report.labels_kl, report.table()  # held-out (test) KL(ensemble || model)
    assert report.student_acc > 0.7 and (report.student_dir / "config.toml").is_file()
    assert "label-only student" in report.table()
    n = len(spiral_task.splits.train)
    assert report.transfer == f"{3 * n} mixup inputs (3x the training split)"  # the default transfer set
    steps = [len(RunStore(d).scalars("loss")) for d in (report.student_dir, report.labels_dir)]
    assert steps[0] == steps[1] == 6 * -(-4 * n // HP["batch_size"])  # the label-only student: the same steps


def test_mixup_rows_are_convex_combinations_of_two_training_inputs_and_reproducible():
    from babysit.ensemble.transfer import transfer_inputs

    x = torch.eye(6).reshape(6, 2, 3)  # each input one coordinate: a mix of two has <= 2 non-zeros summing to 1
    t = transfer_inputs(x, "mixup", 40, seed=3)
    assert t.shape == (40, 2, 3) and t.dtype == x.dtype
    flat = t.reshape(40, -1)
    assert (flat >= 0).all() and torch.allclose(flat.sum(1), torch.ones(40)) and ((flat > 0).sum(1) <= 2).all()
    torch.testing.assert_close(transfer_inputs(x, "mixup", 40, seed=3), t)
    assert not torch.equal(transfer_inputs(x, "mixup", 40, seed=4), t)
    assert len(transfer_inputs(x, "none", 40, seed=3)) == 0


def test_munge_rows_stay_beside_their_neighbours():
    from babysit.ensemble.transfer import transfer_inputs

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(50, 8, generator=g), 100 + torch.rand(50, 8, generator=g)])  # two far clusters
    t = transfer_inputs(x, "munge", 300, seed=1)
    assert t.shape == (300, 8)
    low = (t < 3).all(1)
    assert (low | (t > 97).all(1)).all() and 0.3 < low.float().mean() < 0.7  # each row inside one cluster
    kept = (t[:, None] == x[None]).float().mean(-1).max(1).values  # features left as the training input had them
    assert 0.35 < kept.mean() < 0.65  # p = 0.5 of them redrawn
    torch.testing.assert_close(transfer_inputs(x, "munge", 300, seed=1), t)


def test_the_student_sees_the_training_rows_then_the_transfer_rows_built_without_labels(runs, spiral_task):
    from babysit.ensemble import soft_targets
    from babysit.ensemble.distillation import _student_data, _transfer_rows, _with_train
    from babysit.ensemble.transfer import transfer_inputs

    ens = Ensemble.from_runs(runs)
    x, y = bs.data.tensors(spiral_task.splits.train)
    extra = _transfer_rows("mixup", 0.5, spiral_task, seed=5)
    torch.testing.assert_close(extra, transfer_inputs(x, "mixup", round(0.5 * len(x)), seed=5))
    task, soft, labelled = _student_data(ens, spiral_task, extra, 4.0)
    xs, ys = bs.data.tensors(task.splits.train)
    torch.testing.assert_close(xs, torch.cat([x, extra]))
    assert torch.equal(ys[:len(x)], y) and labelled.tolist() == [True] * len(x) + [False] * len(extra)
    torch.testing.assert_close(soft, soft_targets(ens, task.splits.train, 4.0))
    relabelled = _with_train(spiral_task, x, y[torch.randperm(len(y))])  # the same inputs, other labels
    torch.testing.assert_close(_transfer_rows("mixup", 0.5, relabelled, seed=5), extra)


def test_the_label_term_skips_the_transfer_rows(spiral_task):
    from babysit.ensemble import distill_objective

    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    x, labels = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    soft = torch.softmax(torch.randn(6, 3), 1)
    labelled = torch.tensor([True, True, True, False, False, False])
    obj = distill_objective(spiral_task, 0.0, 2.0, 0.75)
    got = obj(model, x, (labels, soft, labelled))
    s = model(x)
    kd = torch.nn.functional.kl_div(torch.log_softmax(s / 2.0, 1), soft, reduction="batchmean")
    want = 0.75 * 4.0 * kd + 0.25 * torch.nn.functional.cross_entropy(s[:3], labels[:3])
    torch.testing.assert_close(got, want)
    other = torch.tensor([0, 1, 2, 2, 2, 2])  # what a transfer row's label column holds must not matter
    torch.testing.assert_close(obj(model, x, (other, soft, labelled)), got)
    none = torch.zeros(6, dtype=torch.bool)  # a batch of transfer rows only: the soft term alone
    torch.testing.assert_close(obj(model, x, (labels, soft, none)), 0.75 * 4.0 * kd)


SEEN: list[int] = []


def _counting_loss(scores, labels):
    if torch.is_grad_enabled():  # training steps, not evaluations
        SEEN.append(len(labels))
    return torch.nn.functional.cross_entropy(scores, labels)


def test_the_students_label_term_sees_only_the_labelled_rows(runs, spiral, tmp_path):
    from babysit.ensemble import distill

    task = bs.Task(build="mlp", data=spiral, loss=_counting_loss)
    n = len(spiral.train)
    SEEN.clear()
    distill(Ensemble.from_runs(runs, task=task), task, HP, transfer_size=1, epochs=1, run_dir=tmp_path / "d",
            checkpoint_interval=0, monitor=False)
    assert sum(SEEN) == n + 2 * n  # the student's n labelled rows (not its n transfer rows), the baseline's 2n


def test_bad_transfer_settings_are_named_before_anything_trains(runs, spiral_task, tmp_path):
    from babysit.ensemble import distill

    ens = Ensemble.from_runs(runs)
    cases = [({"transfer": "mixupp"}, "transfer='mixupp'.*valid: mixup, munge, none"),
             ({"transfer_size": 0}, "transfer_size=0: must be a number > 0"),
             ({"transfer_size": float("nan")}, "transfer_size=nan"),
             ({"transfer": "none", "transfer_size": 2}, "transfer_size=2: applies to a generated transfer set"),
             ({"transfer": 3}, "transfer=3: must be one of mixup, munge, none or a tensor"),
             ({"transfer": torch.zeros(5, 3)}, r"shape \(rows >= 1, 2\) like the training inputs, got \(5, 3\)"),
             ({"transfer": torch.full((4, 2), float("nan"))}, "NaN or inf")]
    for kwargs, match in cases:
        with pytest.raises(ConfigError, match=match):
            distill(ens, spiral_task, HP, epochs=1, run_dir=tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="floating-point inputs"):
        from babysit.ensemble.transfer import transfer_inputs
        transfer_inputs(torch.arange(10).reshape(5, 2), "mixup", 3, seed=0)


def test_own_transfer_inputs_are_used_as_given(runs, spiral_task, tmp_path):
    from babysit.ensemble import distill

    own = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    report = distill(Ensemble.from_runs(runs), spiral_task, HP, transfer=own, epochs=1, run_dir=tmp_path / "own",
                     checkpoint_interval=0, monitor=False)
    assert report.transfer.startswith("100 given inputs (")


def test_soft_targets_are_the_softened_average(runs, spiral):
    from babysit.ensemble import soft_targets

    ens = Ensemble.from_runs(runs)
    x, _ = bs.data.tensors(spiral.train, limit=8)
    hot, cold = soft_targets(ens, spiral.train, 4.0)[:8], soft_targets(ens, spiral.train, 1.0)[:8]
    torch.testing.assert_close(cold, ens.predict_proba(x))
    manual = torch.stack([torch.softmax(bs.load(r.dir)(x) / 4.0, 1) for r in runs]).mean(0)
    torch.testing.assert_close(hot, manual)
    assert (hot.max(1).values < cold.max(1).values).all()  # softer


def test_a_checkpoint_of_another_architecture_is_named_and_skipped(runs, tmp_path):
    from babysit.store import read_config, write_config

    d = tmp_path / "narrow"
    shutil.copytree(runs[1].dir, d)
    cfg = read_config(d)
    write_config(d, {**cfg, "hp": {**cfg["hp"], "width": 8}})  # its checkpoints no longer fit its model
    with pytest.warns(UserWarning, match="narrow.*does not fit the run's model"):
        ens = Ensemble.from_runs([runs[0].dir, d])
    assert [m.name for m in ens.members] == ["seed-0"]


def test_the_top_k_of_a_search_with_different_widths(spiral_task, tmp_path):
    space = {"lr": bs.loguniform(3e-3, 3e-2), "width": bs.choice([8, 32, 64])}
    study = bs.search(spiral_task, space, stages=[bs.Stage(4, 3)], fixed={"optimizer": "adam", "batch_size": 32},
                      study_dir=tmp_path / "s", workers=0, seed=0)
    ens = Ensemble.from_study(study, 3)
    top = study.top(3)
    assert [m.name for m in ens.members] == [t.run_dir.name for t in top]    # best first
    widths = {m.model.fc1.out_features for m in ens.members}
    assert widths == {t.params["width"] for t in top}                          # each member its own architecture
    rep = ens.evaluate("val", repeats=100)
    assert len(rep.members) == 3
    with pytest.warns(UserWarning, match="fewer than k=9"):
        assert len(Ensemble.from_study(bs.load_study(tmp_path / "s"), 9)) == 4
    with pytest.raises(ConfigError, match="k=0"):
        Ensemble.from_study(study, 0)
    with pytest.raises(ConfigError, match="babysit Study"):
        Ensemble.from_study(tmp_path / "s", 2)
