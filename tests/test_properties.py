"""Property-based tests (hypothesis): generated configs and command lines end in a plan or in ConfigError / exit 2
naming the field, never in an uncaught traceback. The key registry gives every key's bounds and choices."""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import babysit as bs

assert callable(bs.train)  # bs.train first: importing the babysit.train module before it would shadow the function
from babysit.cli import main  # noqa: E402
from babysit.config import from_dict  # noqa: E402
from babysit.errors import ConfigError  # noqa: E402
from babysit.hparams import KEYS  # noqa: E402
from babysit.train import Plan, prepare  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SANE = {"width": (1, 48), "depth": (1, 3), "batch_size": (1, 600), "kernel_size": (1, 7),
        "lbfgs_max_iter": (1, 5), "lbfgs_history": (1, 10), "early_stop": (1, 10), "step_every": (1, 10),
        "plateau_patience": (1, 10)}


def valid(name: str) -> st.SearchStrategy:
    """Returns values the registry accepts for a key, kept small where size costs time (width, depth)."""
    key = KEYS[name]
    if key.choices:
        return st.sampled_from(key.choices)
    if key.kind is int:
        lo, hi = SANE.get(name, (int(key.low or 0) + (1 if key.low_open else 0), int(min(key.high or 100, 100))))
        return st.integers(lo, hi)
    lo = 0.0 if key.low is None else key.low
    hi = min(key.high if key.high is not None else 1e3, 1e3)
    return st.floats(lo, hi, exclude_min=key.low_open, exclude_max=key.high_open and hi == key.high,
                     allow_nan=False).filter(lambda v: not (key.low_open and v <= lo))


def invalid(name: str) -> st.SearchStrategy:
    """Returns values the registry must refuse for a key: out of bounds, non-finite, wrong types."""
    key = KEYS[name]
    wrong_type = st.one_of(st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                                st.integers(), max_size=1))
    if key.choices:
        return st.one_of(st.text(max_size=8).filter(lambda s: s not in key.choices), st.integers(), wrong_type)
    out = [st.sampled_from([math.nan, math.inf, -math.inf]), st.text(max_size=6), wrong_type]
    if key.low is not None:
        gap = st.floats(0.0, 1e6, allow_nan=False)
        out.append(gap.map(lambda d: key.low - d) if key.low_open else gap.map(lambda d: key.low - 1e-3 - d))
    if key.high is not None:
        gap = st.floats(0.0, 1e6, allow_nan=False)
        out.append(gap.map(lambda d: key.high + d) if key.high_open else gap.map(lambda d: key.high * 1.01 + 1 + d))
    if key.kind is int:
        out.append(st.integers(1, 50).map(lambda i: i + 0.5))
    return st.one_of(*out)


@pytest.fixture(scope="module")
def task(spiral):
    return bs.Task(build="mlp", data=spiral)


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_one_invalid_value_is_refused_naming_its_key(task, data):
    name = data.draw(st.sampled_from(sorted(KEYS)))
    value = data.draw(invalid(name))
    with pytest.raises(ConfigError) as err:
        task.resolve_hp({"optimizer": "nesterov", "lr": 0.05, name: value})
    assert f"hp[{name!r}]" in str(err.value)


@st.composite
def run_inputs(draw):
    """Returns (hp, train settings, the fields made invalid): a few keys valid or not, epochs/seed/interval too."""
    names = draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=6, unique=True))
    hp, bad = {}, set()
    for name in names:
        if draw(st.integers(0, 4)) == 0:
            hp[name], bad = draw(invalid(name)), bad | {f"hp[{name!r}]"}
        else:
            hp[name] = draw(valid(name))
    train = {"epochs": draw(st.integers(1, 5)), "seed": draw(st.integers(0, 2**31)),
             "checkpoint_interval": draw(st.floats(0, 100))}
    for field, wrong in (("epochs", st.one_of(st.integers(-5, 0), st.floats(1.5, 3.5), st.just(math.nan))),
                         ("seed", st.integers(-10, -1)), ("checkpoint_interval", st.floats(-100, -1e-3))):
        if draw(st.integers(0, 9)) == 0:
            train[field], bad = draw(wrong), bad | {field}
    return hp, train, bad


@settings(max_examples=80, **SETTINGS)
@given(inputs=run_inputs())
def test_generated_runs_end_in_a_plan_or_a_config_error_naming_the_field(task, inputs):
    hp, train, bad = inputs
    run_dir = Path(tempfile.mkdtemp(prefix="babysit-prop-")) / "run"
    try:
        plan = prepare(task, hp, run_dir=run_dir, **train)
    except ConfigError as exc:
        text = str(exc)
        named = bad or {f"hp[{k!r}]" for k in hp} | set(hp)
        assert any(f in text for f in named), f"{text!r} names none of {sorted(named)}"
        event("refused: invalid input" if bad else "refused: valid values that do not go together")
        return
    event("planned")
    assert not bad, f"accepted invalid {sorted(bad)}: {hp} {train}"
    assert isinstance(plan, Plan) and not run_dir.exists()  # a plan writes nothing


SECTIONS = st.fixed_dictionaries({}, optional={
    "task": st.fixed_dictionaries({}, optional={"data": st.sampled_from(["spiral", 3, "no_such_data"]),
                                                "loss": st.sampled_from(["softmax", "svm", None, 1.5]),
                                                "val_fraction": st.floats(-1, 2), "bogus": st.just(1)}),
    "train": st.fixed_dictionaries({}, optional={"epochs": st.one_of(st.integers(-3, 5), st.floats(0, 3)),
                                                 "threads": st.one_of(st.integers(-2, 4), st.just("auto")),
                                                 "device": st.sampled_from(["cpu", "auto", "tpu", 7]),
                                                 "checkpoint_interval": st.floats(-5, 5)}),
    "hp": st.one_of(st.just({"lr": 0.1}), st.just([1, 2])),
    "nonsense": st.just({}),
})


@settings(max_examples=80, **SETTINGS)
@given(d=SECTIONS)
def test_generated_config_files_load_or_fail_with_a_config_error_naming_the_field(d):
    try:
        cfg = from_dict(d)
    except ConfigError as exc:
        names = [f"{s}.{k}" for s, sec in d.items() if isinstance(sec, dict) for k in sec] + [f"[{s}]" for s in d]
        assert any(n in str(exc) for n in names) or "unknown" in str(exc), str(exc)
        return
    assert cfg.train.epochs >= 1 and "nonsense" not in d


def cli_argv(name: str, value: object, run_dir: Path) -> list[str]:
    text = value if isinstance(value, str) else repr(value)
    return ["train", "--data", "spiral", "--model", "mlp", "--epochs", "1", "--dry-run", "--run-dir", str(run_dir),
            f"{KEYS[name].flag}={text}"]  # --flag=value: a leading "-" is a value, not another flag


CLI_VALUES = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "1e999", "abc", "[1, 2]", "true", "'x'", "{}"]),
                       st.floats(-1e7, -1e-3).map(repr))


@settings(max_examples=60, **SETTINGS)
@given(name=st.sampled_from(sorted(KEYS)), text=CLI_VALUES)
def test_invalid_flags_exit_2_naming_the_key_in_process(name, text):
    key = KEYS[name]
    if not key.choices and text in ("-1",) and key.low is not None and key.low <= -1:
        return  # -1 is in range for this key
    run_dir = Path(tempfile.mkdtemp(prefix="babysit-prop-")) / "run"
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        try:
            code = main(cli_argv(name, text, run_dir))
        except SystemExit as exc:  # argparse's own refusals exit 2 too
            code = exc.code
    err = buf.getvalue()
    event("refused by babysit" if f"hp[{name!r}]" in err else "refused by argparse")
    assert code == 2, err
    assert (name in err or KEYS[name].flag in err) and "Traceback" not in err and not run_dir.exists()


@settings(max_examples=2, **SETTINGS)
@given(name=st.sampled_from(["lr", "momentum", "width", "schedule", "batch_size", "beta2"]),
       text=st.sampled_from(["nan", "-3", "abc", "1e999"]))
def test_invalid_flags_exit_2_naming_the_key_in_a_real_process(name, text):
    run_dir = Path(tempfile.mkdtemp(prefix="babysit-prop-")) / "run"
    babysit = Path(sys.executable).parent / "babysit"
    r = subprocess.run([str(babysit), *cli_argv(name, text, run_dir)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert f"hp[{name!r}]" in r.stderr and "Traceback" not in r.stderr and not run_dir.exists()
