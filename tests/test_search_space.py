"""Search spaces and samplers: log-uniform is uniform in log10, validation names the key, TOML is data."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

import babysit as bs
from babysit.search import parse_space, propose
from babysit.search.samplers import unit_point
from babysit.search.space import check_space

SPACE = {"lr": bs.loguniform(1e-6, 1.0)}


@pytest.mark.parametrize("sampler", ["random", "qmc"])
def test_loguniform_is_uniform_in_log10(sampler):
    space = check_space(SPACE)
    x = np.log10([propose(sampler, 3, 0, i, space, 2000)["lr"] for i in range(2000)])
    assert x.min() >= -6 and x.max() <= 0
    assert stats.kstest((x + 6) / 6, "uniform").pvalue > 0.01
    counts = np.histogram(x, bins=6, range=(-6, 0))[0]   # one decade per bin: equal shares
    assert counts.min() > 0.8 * 2000 / 6 and counts.max() < 1.2 * 2000 / 6
    # the contrast: uniform(1e-6, 1) puts almost everything in the top decade
    lin = np.log10([propose(sampler, 3, 0, i, check_space({"lr": bs.uniform(1e-6, 1.0)}), 2000)["lr"]
                    for i in range(2000)])
    assert (lin > -1).mean() > 0.85


def test_intuniform_log_and_choice_cover_their_values():
    space = check_space({"width": bs.intuniform(8, 512, log=True), "act": bs.choice(["relu", "tanh"])})
    ps = [propose("random", 0, 0, i, space, 500) for i in range(500)]
    w = np.array([p["width"] for p in ps])
    assert w.min() >= 8 and w.max() <= 512 and all(isinstance(p["width"], int) for p in ps)
    assert 0.35 < (w < 64).mean() < 0.65                  # 64 is the log-midpoint of [8, 512]
    assert {p["act"] for p in ps} == {"relu", "tanh"}


def test_grid_points_are_centred_in_their_cells():
    space = check_space({"lr": bs.loguniform(1e-4, 1.0), "reg": bs.uniform(0.0, 1.0)})
    pts = sorted({(propose("grid", 0, 0, i, space, 9)["lr"], propose("grid", 0, 0, i, space, 9)["reg"])
                  for i in range(9)})
    assert len(pts) == 9
    assert sorted({round(math.log10(a), 9) for a, _ in pts}) == pytest.approx([-4 + 4 / 6, -2, -4 / 6])
    assert sorted({round(b, 9) for _, b in pts}) == pytest.approx([1 / 6, 0.5, 5 / 6])   # never 0 or 1


def test_proposals_are_a_pure_function_of_seed_stage_index():
    space = check_space({"lr": bs.loguniform(1e-6, 1.0), "reg": bs.uniform(0, 1)})
    for sampler in ("random", "qmc"):
        a = [propose(sampler, 7, 1, i, space, 50) for i in (5, 3, 9)]
        b = [propose(sampler, 7, 1, i, space, 50) for i in (9, 5, 3)]
        assert a == [b[1], b[2], b[0]]
        assert propose(sampler, 7, 1, 5, space, 50) != propose(sampler, 8, 1, 5, space, 50)
        assert propose(sampler, 7, 1, 5, space, 50) != propose(sampler, 7, 2, 5, space, 50)


def test_conditional_key_only_when_its_choice_holds():
    space = check_space({"optimizer": bs.choice(["sgd", "momentum", "nesterov", "adam"]),
                         "momentum": bs.uniform(0.5, 0.99, when={"optimizer": ["momentum", "nesterov"]})})
    ps = [propose("random", 0, 0, i, space, 200) for i in range(200)]
    assert all(("momentum" in p) == (p["optimizer"] in ("momentum", "nesterov")) for p in ps)
    assert any("momentum" in p for p in ps) and any("momentum" not in p for p in ps)
    # a condition on a fixed key works too
    fixed_space = check_space({"momentum": bs.uniform(0.5, 0.9, when={"optimizer": ["momentum"]})},
                              {"optimizer": "sgd"})
    assert propose("random", 0, 0, 0, fixed_space, 1, {"optimizer": "sgd"}) == {}


@pytest.mark.parametrize("space, match", [
    ({"lr": bs.loguniform(1.0, 1e-3)}, r"space\['lr'\].*lo < hi"),
    ({"lr": bs.loguniform(0.0, 1.0)}, r"space\['lr'\].*log scale.*lo > 0"),
    ({"width": bs.intuniform(8.5, 64)}, r"space\['width'\].*integer"),
    ({"act": bs.choice([])}, r"space\['act'\].*at least one"),
    ({"lr": (1e-6, 1.0)}, r"space\['lr'\].*bs.loguniform"),
    ({"momentum": bs.uniform(0.5, 0.9, when={"optimizer": ["momentum"]})}, r"neither searched nor fixed"),
])
def test_bad_spaces_are_refused_naming_the_key(space, match):
    with pytest.raises(bs.ConfigError, match=match):
        check_space(space)


def test_search_table_is_parsed_as_data_never_evaluated():
    import tomllib

    table = tomllib.loads("""
        lr = {loguniform = [1e-6, 1.0]}
        width = {intuniform = [16, 256], log = true}
        optimizer = {choice = ["sgd", "momentum"]}
        momentum = {uniform = [0.5, 0.99], when = {optimizer = ["momentum"]}}
    """)
    space = check_space(parse_space(table))
    assert space["lr"] == bs.loguniform(1e-6, 1.0) and space["width"] == bs.intuniform(16, 256, log=True)
    assert space["momentum"].when == (("optimizer", ("momentum",)),)
    with pytest.raises(bs.ConfigError, match="finite number"):
        check_space(parse_space({"lr": {"loguniform": ["__import__('os').system('x')", 1.0]}}))
    with pytest.raises(bs.ConfigError, match="exactly one of"):
        parse_space({"lr": {"logunifrom": [1e-6, 1.0]}})


def test_search_table_stages_by_budget_use_the_default_layout():
    import tomllib

    from babysit.search import coarse_to_fine
    from babysit.search.api import settings_from_table

    table = tomllib.loads("""
        lr = {loguniform = [1e-4, 1.0]}
        stages = {epochs = 9, budget = 243}
    """)
    space, settings = settings_from_table(table)
    assert list(space) == ["lr"] and settings["stages"] == coarse_to_fine(9, 243)
    table = tomllib.loads('lr = {loguniform = [1e-4, 1.0]}\nstages = [{trials = 4, epochs = 1, sampler = "tpe"}]')
    assert settings_from_table(table)[1]["stages"] == [bs.Stage(4, 1, sampler="tpe")]
    with pytest.raises(bs.ConfigError, match="budget = 243"):
        settings_from_table({"stages": {"epochs": 9}})


def test_sampler_overhead_at_trial_1000():
    space = check_space({"lr": bs.loguniform(1e-6, 1.0), "reg": bs.loguniform(1e-6, 1e-1),
                         "width": bs.intuniform(16, 512, log=True), "dropout": bs.uniform(0, 0.5)})
    for sampler, budget in (("random", 1e-3), ("qmc", 10e-3)):
        propose(sampler, 0, 0, 999, space, 2000)        # warm (Sobol engine built once per stage)
        t = time.perf_counter()
        for _ in range(20):
            propose(sampler, 0, 0, 1000, space, 2000)
        per = (time.perf_counter() - t) / 20
        assert per < 3 * budget, (sampler, per)          # x3 slack on a shared machine; bench/search.py measures
    assert unit_point("qmc", 0, 0, 1000, space, 2000).shape == (4,)
