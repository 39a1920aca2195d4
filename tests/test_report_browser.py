"""The report in a real browser: headless Chromium (driven by selenium) loads every image, shows the findings
and logs no console error. The screenshot stays in the test's tmp dir as an artefact."""

from __future__ import annotations

import shutil

import pytest

import babysit as bs

webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed "
                                "(make test installs them with apt-get)")


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,4000"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def test_report_opens_in_chromium_with_every_image_loaded(browser, tmp_path):
    digits = bs.data.load("digits", seed=0)
    task = bs.Task(build="mlp", data=digits)
    run = bs.train(task, {"optimizer": "momentum", "lr": 3.0, "width": 32, "batch_size": 64}, epochs=3,
                   run_dir=tmp_path / "sick")
    path = bs.report(run.dir)
    browser.get(path.resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) >= 6
    assert all(ok and w > 100 and h > 50 for _, ok, w, h in images), images
    findings = browser.find_element("id", "findings")
    assert findings.is_displayed() and "lr_too_high" in findings.text
    severe = [log for log in browser.get_log("browser") if log["level"] in ("SEVERE", "ERROR")]
    assert not severe, severe
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">'\""


def _no_script_ran(browser, uri):
    browser.get(uri)
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    return browser.find_element("tag name", "body").text


def test_hostile_names_and_values_are_shown_as_text_in_report_and_study(browser, tmp_path):
    from babysit.search import run_study

    digits = bs.data.load("digits", seed=0)
    task = bs.Task(build="mlp", data=digits)
    hostile_dir = tmp_path / "<script>window.__pwned=3<\\script>\" onerror=\"window.__pwned=4'"
    run = bs.train(task, {"optimizer": "adam", "lr": 3e-3, "width": 16, "comment": HOSTILE}, epochs=1,
                   run_dir=hostile_dir, monitor=True)
    text = _no_script_ran(browser, bs.report(run.dir).resolve().as_uri())
    assert "<script>window.__pwned=1</script>" in text                  # shown, as text
    assert not [log for log in browser.get_log("browser") if log["level"] in ("SEVERE", "ERROR")]

    space = {"lr": bs.loguniform(1e-4, 1.0), "act": bs.choice(["relu", HOSTILE])}
    study = run_study(lambda ctx: float(ctx.params["act"] == HOSTILE) + ctx.params["lr"], space,
                      stages=[bs.Stage(6, 1)], study_dir=tmp_path / "<b onmouseover=\"window.__pwned=5\">s",
                      workers=0, sampler="random", seed=0)
    text = _no_script_ran(browser, study.html().resolve().as_uri())
    assert "window.__pwned=1" in text


def test_hostile_names_and_values_are_shown_as_text_in_recipe_html(browser, tmp_path):
    """recipe.html, completed and stopped at preflight, with markup in every string it shows: the directory,
    the best hyperparameters, a candidate's description, a final run's name and findings, the next steps and
    the preflight report. (tests/test_recipe.py runs a real recipe under a hostile directory name.)"""
    from babysit.recipe.result import Candidate, RecipeResult, StageSummary

    root = tmp_path / "<img src=x onerror=\"window.__pwned=6\">r"
    run = root / "final" / HOSTILE.replace("/", "_")
    run.mkdir(parents=True)
    finding = {"severity": "warning", "code": HOSTILE, "message": HOSTILE, "advice": HOSTILE}
    common = dict(dir=root, plan=None, preflight={}, preflight_text=HOSTILE, chance=0.1, seconds={HOSTILE: 1.0},
                  warnings=(HOSTILE,), next_steps=(HOSTILE,), test_examples=360, study_dir=root / "study")
    done = RecipeResult(status="completed", stages=(StageSummary(0, HOSTILE, 4, 1, 4, 0, 0.5, 1, 2.0,
                                                                 {"act": HOSTILE, "lr": 0.01}),),
                        candidates=(Candidate(HOSTILE, HOSTILE, (str(run),), 0.9, 0.88, 0.85, 0.9),),
                        chosen=HOSTILE, findings={str(run): [finding]}, reports={str(run): str(run / "report.html")},
                        **common)
    text = _no_script_ran(browser, done.write_html().resolve().as_uri())
    assert text.count("<script>window.__pwned=1</script>") >= 5                  # shown, as text, every time
    assert not [log for log in browser.get_log("browser") if log["level"] in ("SEVERE", "ERROR")]
    stopped = RecipeResult(status="preflight failed", stages=(), candidates=(), chosen=None, findings={},
                           reports={}, **common)
    text = _no_script_ran(browser, stopped.write_html().resolve().as_uri())
    assert text.count("window.__pwned=1") >= 2
