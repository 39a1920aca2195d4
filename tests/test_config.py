"""Configuration: TOML in, typed and validated dataclasses out; values are literals, never code."""

from __future__ import annotations

import pytest

from babysit.config import from_dict, load_config, parse_value, with_overrides
from babysit.errors import ConfigError


def test_parse_value_is_a_toml_literal_never_code():
    assert parse_value("0.05") == 0.05 and parse_value("3") == 3 and parse_value("true") is True
    assert parse_value("[64, 32]") == [64, 32] and parse_value("1e-3") == 1e-3
    assert parse_value("nesterov") == "nesterov"
    assert parse_value("__import__('os').system('echo hi')") == "__import__('os').system('echo hi')"


def test_example_configs_load(tmp_path):
    from pathlib import Path

    for p in (Path(__file__).parents[1] / "examples").glob("*.toml"):
        cfg = load_config(p)
        assert cfg.train.epochs >= 1 and cfg.task.data in ("mnist1d", "digits", "spiral")


def test_overrides_replace_and_validate():
    cfg = with_overrides(from_dict({"hp": {"lr": 0.1}}), hp={"lr": 0.2, "width": 8}, train={"epochs": 4})
    assert cfg.hp == {"lr": 0.2, "width": 8} and cfg.train.epochs == 4
    with pytest.raises(ConfigError, match="train.epochs=0"):
        with_overrides(cfg, train={"epochs": 0})


@pytest.mark.parametrize("d, match", [
    ({"trian": {}}, "unknown section"),
    ({"train": {"epoch": 3}}, r"unknown key\(s\) \['epoch'\].*epochs"),
    ({"train": {"epochs": "ten"}}, "train.epochs='ten'"),
    ({"train": {"device": "tpu"}}, "train.device='tpu'"),
    ({"hp": [1, 2]}, r"\[hp\] must be a table"),
])
def test_bad_config_names_the_field(d, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(d)


def test_a_run_directorys_config_can_be_run_again(spiral_task, tmp_path):
    import babysit as bs

    run = bs.train(spiral_task, {"optimizer": "adam", "lr": 0.01, "width": 8}, epochs=2, run_dir=tmp_path / "a")
    cfg = load_config(run.dir / "config.toml")
    assert cfg.task.data == "spiral" and cfg.task.model == "mlp" and cfg.train.epochs == 2
    task = bs.Task.from_config(cfg.task)
    again = bs.train(task, cfg.hp, epochs=cfg.train.epochs, run_dir=tmp_path / "b", seed=cfg.train.seed)
    assert [r.val_loss for r in again.history] == [r.val_loss for r in run.history]


def test_a_run_of_an_unnamed_model_says_why_it_cannot_be_run_again(spiral, tmp_path):
    import torch

    import babysit as bs

    run = bs.train(bs.Task(build=lambda hp: torch.nn.Linear(2, 3), data=spiral), {}, epochs=1, run_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="cannot be re-run: the model comes from a function"):
        load_config(run.dir / "config.toml")
