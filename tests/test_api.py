"""The public API: a pinned, sorted __all__ (DESIGN.md section 3); everything in it is importable."""

from __future__ import annotations

import babysit as bs

PUBLIC = [
    "BabysitError", "CheckFailed", "ConfigError", "DataError", "EpochRecord", "Evaluation", "Finding",
    "GradientReport", "MissingExtra", "PreflightReport", "Run", "SanityReport", "Splits", "Stage", "StepRecord",
    "Stop", "StoreError", "Study", "Task", "Trial", "UserCodeError", "__version__", "assert_gradients",
    "check_autograd_function", "check_function", "check_gradients", "check_layer", "check_loss", "check_task",
    "choice", "config", "data", "diagnose", "errors", "evaluate", "gradcheck", "hparams", "intuniform", "load",
    "load_study", "loguniform", "losses", "lr_find", "models", "optim", "report", "sanity", "sanity_checks",
    "search", "status", "step", "store", "train", "uniform", "watch",
]
PUBLIC = sorted([*PUBLIC, "Ensemble", "distill", "ensemble", "train_many"])  # issue 11: ensembles
PUBLIC = sorted([*PUBLIC, "Budget", "RecipeResult", "recipe"])  # issue 14: the recipe


def test_all_is_pinned_and_sorted():
    assert bs.__all__ == sorted(bs.__all__)
    assert bs.__all__ == PUBLIC
    for name in bs.__all__:
        assert getattr(bs, name) is not None


def test_names_from_the_notes():
    assert set(bs.optim.RULES) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "lbfgs"}
    assert set(bs.optim.SCHEDULES) == {"constant", "step", "exp", "inv_t", "plateau"}
    assert bs.sanity.SANITY_CHECKS == ("chance_loss", "reg_raises_loss", "overfit_tiny", "learnable_signal",
                                       "batch_independence", "params_get_gradient")


def test_error_tree():
    assert issubclass(bs.ConfigError, bs.BabysitError) and issubclass(bs.ConfigError, ValueError)
    assert issubclass(bs.CheckFailed, AssertionError) and issubclass(bs.MissingExtra, ImportError)
    import pytest

    with pytest.raises(bs.MissingExtra, match=r"pip install 'babysit\[ray\]'"):
        bs._optional.require("surely_not_installed_pkg", extra="ray")


def test_import_babysit_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, babysit, babysit.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
