"""Stages coarse to fine: re-ranging around the top trials, and the border rule with its trend test."""

from __future__ import annotations

import math

import numpy as np
import pytest

import babysit as bs
from babysit.search import Outcome, border_findings, coarse_to_fine, propose, refit, run_study
from babysit.search.space import check_space


def _peak_outside(ctx):
    """The optimum of lr is 1e-5, below the first range [1e-4, 1]; wd has no effect at all."""
    return -abs(math.log10(ctx.params["lr"]) + 5.0)


def test_optimum_outside_the_first_range_extends_it_with_a_warning(tmp_path):
    space = {"lr": bs.loguniform(1e-4, 1.0), "wd": bs.loguniform(1e-6, 1e-1)}
    study = run_study(_peak_outside, space, stages=[bs.Stage(30, 1, keep=5), bs.Stage(20, 1)],
                      study_dir=tmp_path / "s", workers=0, sampler="random", seed=1)
    lo1, hi1 = study.ranges(1)["lr"]["loguniform"]
    assert lo1 < 1e-4 / 10 ** 1.9 and hi1 < 1e-2          # extended past the low edge (by half the width: 2 decades)
    w = study.warnings
    assert len(w) == 1 and "lr" in w[0] and "low edge" in w[0]
    assert study.ranges(1)["wd"] == study.ranges(0)["wd"] or "wd" not in " ".join(w)
    s0 = max(t.metric for t in study.trials if t.stage == 0)
    assert study.best.stage == 1 and study.best.metric > s0 + 0.5   # the extension found better values
    assert abs(math.log10(study.best.params["lr"]) + 5) < 0.5


def test_no_extension_when_the_edge_parameter_has_no_effect():
    rng = np.random.default_rng(0)
    space = check_space({"lr": bs.loguniform(1e-4, 1.0), "wd": bs.loguniform(1e-6, 1e-1)})
    results = []
    for _ in range(40):  # metric depends on lr only; the best trials happen to sit at wd's low edge
        lr, wd = 10 ** rng.uniform(-4, 0), 10 ** rng.uniform(-6, -1)
        results.append(({"lr": lr, "wd": wd}, -abs(math.log10(lr) + 2) + rng.normal(0, 0.05)))
    ranked = sorted(range(40), key=lambda i: -results[i][1])
    for j, i in enumerate(ranked[:3]):  # park the top 3 at the low edge of wd, as a GP sampler did
        results[i] = ({**results[i][0], "wd": 10 ** (-6 + 0.05 * j)}, results[i][1])
    new, findings = refit(space, results, keep=5, stage=0)
    wd = [f for f in findings if f["key"] == "wd"]
    assert wd and all(f["kind"] == "no_trend" for f in wd)     # seen at the edge, but flat: not extended
    assert new["wd"].lo >= 1e-6
    assert not [f for f in findings if f["kind"] == "extend"]
    # position alone would have misfired: the best wd is within 15% of the edge
    assert math.log10(results[ranked[0]][0]["wd"]) < -6 + 0.15 * 5


@pytest.mark.parametrize("seed", range(5))
def test_no_extension_of_a_no_effect_parameter_end_to_end(tmp_path, seed):
    def objective(ctx):  # optimum of lr inside the range; wd does nothing
        return -abs(math.log10(ctx.params["lr"]) + 2.0)

    study = run_study(objective, {"lr": bs.loguniform(1e-4, 1.0), "wd": bs.loguniform(1e-6, 1e-1)},
                      stages=[bs.Stage(24, 1), bs.Stage(8, 1)], study_dir=tmp_path / "s", workers=0,
                      sampler="random", seed=seed)
    assert study.warnings == []
    assert study.ranges(1)["wd"]["loguniform"][0] >= 1e-6 and study.ranges(1)["wd"]["loguniform"][1] <= 1e-1
    lo, hi = study.ranges(1)["lr"]["loguniform"]
    assert 1e-4 <= lo < 1e-2 < hi <= 1.0 and hi / lo < 1e4  # narrowed around the optimum


def test_refit_is_a_pure_function_and_narrows_choices():
    acts = ["relu", "tanh", "sigmoid", "elu"]
    space = check_space({"lr": bs.loguniform(1e-4, 1.0), "act": bs.choice(acts)})
    results = [({"lr": 10 ** (-3 + 0.1 * i), "act": acts[i % 4]}, float(-abs(i - 4))) for i in range(12)]
    a = refit(space, results, keep=3, stage=0)
    assert a == refit(space, list(results), keep=3, stage=0)
    new, findings = a
    assert new["act"].values == ("relu", "tanh", "elu")       # the top 3 (i = 3, 4, 5) used these
    # top lr positions -2.7..-2.5; margin max(0.25 * spread, 10% of the 4-decade width) = 0.4 decades
    assert math.log10(new["lr"].lo) == pytest.approx(-3.1) and math.log10(new["lr"].hi) == pytest.approx(-2.1)
    assert findings == []


def test_border_warning_on_the_last_stage():
    space = check_space({"lr": bs.loguniform(1e-4, 1.0)})
    results = [({"lr": 10 ** x}, -x) for x in np.linspace(-4, 0, 20)]  # better and better toward the low edge
    f = border_findings(space, results, stage=2)
    assert [x["kind"] for x in f] == ["extend"] and f[0]["edge"] == "low"


def test_successive_halving_continues_the_top_trials(tmp_path):
    seen = []

    def objective(ctx):
        seen.append((ctx.id, ctx.stage, ctx.epochs, ctx.continue_from, dict(ctx.params)))
        return Outcome(metric=-abs(math.log10(ctx.params["lr"]) + 2.0) + ctx.epochs, epochs=ctx.epochs)

    study = run_study(objective, {"lr": bs.loguniform(1e-4, 1.0)},
                      stages=[bs.Stage(10, 1), bs.Stage(4, 3, continue_top=3)], study_dir=tmp_path / "s",
                      workers=0, sampler="qmc", seed=0)
    top0 = sorted((t for t in study.trials if t.stage == 0), key=lambda t: -t.metric)[:3]
    cont = [s for s in seen if s[1] == 1 and s[3] is not None]
    assert [c[3] for c in cont] == [t.run_dir for t in top0]
    assert [c[4] for c in cont] == [dict(t.params) for t in top0] and all(c[2] == 3 for c in cont)
    assert [t.continues for t in study.trials if t.stage == 1][:3] == [t.id for t in top0]
    assert len([s for s in seen if s[1] == 1]) == 4


def test_bad_stages_are_refused():
    with pytest.raises(bs.ConfigError, match=r"stages\[0\].continue_top"):
        run_study(_peak_outside, {"lr": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(4, 1, continue_top=2)],
                  study_dir="/nonexistent/never", workers=0)
    with pytest.raises(bs.ConfigError, match=r"stages\[1\].continue_top.*epochs"):
        run_study(_peak_outside, {"lr": bs.loguniform(1e-4, 1.0)},
                  stages=[bs.Stage(4, 2), bs.Stage(2, 2, continue_top=2)], study_dir="/nonexistent/never")
    with pytest.raises(bs.ConfigError, match="sampler='sobol'"):
        run_study(_peak_outside, {"lr": bs.loguniform(1e-4, 1.0)}, stages=[bs.Stage(4, 1)],
                  study_dir="/nonexistent/never", sampler="sobol")


def test_a_stage_can_have_its_own_sampler(tmp_path):
    def objective(ctx):
        return -abs(math.log10(ctx.params["lr"]) + 2.0)

    space = {"lr": bs.loguniform(1e-4, 1.0)}
    study = run_study(objective, space, stages=[bs.Stage(12, 1, keep=3), bs.Stage(14, 1, sampler="tpe")],
                      study_dir=tmp_path / "s", workers=0, sampler="qmc", seed=3)
    s0 = [t for t in study.trials if t.stage == 0]
    assert [dict(t.params) for t in s0] == [propose("qmc", 3, 0, i, check_space(space), 12) for i in range(12)]
    lo, hi = study.ranges(1)["lr"]["loguniform"]
    s1 = [t.params["lr"] for t in study.trials if t.stage == 1]
    assert len(s1) == 14 and all(lo <= x <= hi for x in s1)  # tpe, inside the refitted range
    qmc1 = [propose("qmc", 3, 1, i, check_space({"lr": bs.loguniform(lo, hi)}), 14)["lr"] for i in range(14)]
    assert s1 != qmc1
    assert study.plan["stages"][0] == {"trials": 12, "epochs": 1, "keep": 3, "continue_top": 0}  # older plans compare equal
    with pytest.raises(bs.ConfigError, match=r"stages\[1\].sampler='sobol'"):
        run_study(objective, space, stages=[bs.Stage(4, 1), bs.Stage(2, 1, sampler="sobol")],
                  study_dir=tmp_path / "t", workers=0)


@pytest.mark.parametrize("epochs,budget", [(9, 243), (9, 100), (3, 30), (2, 40), (20, 1000), (1, 50), (9, 20)])
def test_coarse_to_fine_spends_the_budget_in_narrowing_stages(epochs, budget):
    st = coarse_to_fine(epochs, budget)
    spent = sum(s.trials * s.epochs for s in st)
    assert budget - epochs < spent <= budget and st[-1].epochs == epochs
    assert [s.epochs for s in st] == sorted({s.epochs for s in st})      # each stage trains longer
    if len(st) > 1:
        assert st[0].epochs == 1 and all(s.keep is not None and s.keep >= 3 for s in st[:-1])
    if (epochs, budget) == (9, 243):
        assert [(s.trials, s.epochs, s.keep) for s in st] == [(48, 1, 5), (16, 3, 3), (16, 9, None)]


def test_coarse_to_fine_narrows_onto_the_optimum(tmp_path):
    def objective(ctx):  # optimum lr 1e-2 and wd 1e-4; longer trainings score higher, with noise
        x, y = math.log10(ctx.params["lr"]) + 2.0, math.log10(ctx.params["wd"]) + 4.0
        noise = np.random.default_rng(ctx.id).normal(0, 0.05)
        return Outcome(metric=-(x * x + 0.3 * y * y) + 0.1 * ctx.epochs + noise, epochs=ctx.epochs)

    space = {"lr": bs.loguniform(1e-5, 1.0), "wd": bs.loguniform(1e-7, 1e-1)}
    study = run_study(objective, space, stages=coarse_to_fine(3, 60), study_dir=tmp_path / "s", workers=0, seed=0)
    widths = [math.log10(hi / lo) for lo, hi in (study.ranges(s)["lr"]["loguniform"] for s in range(3))]
    assert widths[0] > widths[1] > widths[2] and widths[2] < 2.5
    assert study.best.stage == 2 and abs(math.log10(study.best.params["lr"]) + 2.0) < 0.5


def test_study_html_puts_border_warnings_first_and_escapes_everything(tmp_path):
    space = {"lr": bs.loguniform(1e-4, 1.0), "act": bs.choice(["relu", "<script>x</script>"])}
    study = run_study(_peak_outside, space, stages=[bs.Stage(20, 1), bs.Stage(5, 1)], study_dir=tmp_path / "s",
                      workers=0, sampler="random", seed=1)
    page = study.html().read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    first_warning = page.index("class='warn'")
    assert first_warning < page.index("<h2>") and "low edge" in page[first_warning:first_warning + 300]
    assert page.count("data:image/png;base64,") == 2                   # one plot per parameter
    assert f'href="trials/{study.best.id:05d}"' in page
