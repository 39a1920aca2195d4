"""The recipe on real data against published baselines: MNIST-1D (Greydanus 2020, "Scaling Down Deep
Learning") with the paper's CNN and an MLP, and scikit-learn's digits.

    PYTHONPATH=src .venv/bin/python bench/recipe.py [--minutes 10] [--digits-minutes 2] [--only cnn|mlp|digits]

Each row is one `bs.recipe` run of the example config (examples/mnist1d_cnn.toml, mnist1d_mlp_recipe.toml,
digits_recipe.toml) with the given wall-clock budget on this machine (2 workers), reporting the recipe's
result (chosen on validation) on the test split with its 95% interval, the best single model and the
ensemble, and the wall time. The paper's figures are quoted beside them (its Table: logistic regression
32%, MLP 68%, CNN 94%, GRU 91%, human expert 96%); the issue's hand-tuned figures too (CNN 93.0% single,
96.1% as a 5-init ensemble; MLP 66.0% single, 72.8% ensemble).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import babysit as bs
from babysit.config import load_config
from babysit.search.api import settings_from_table

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
ROOT = Path(__file__).resolve().parent.parent
RUNS = {"cnn": ("examples/mnist1d_cnn.toml", "MNIST-1D", "paper's CNN", "CNN 94%"),
        "mlp": ("examples/mnist1d_mlp_recipe.toml", "MNIST-1D", "MLP", "MLP 68%"),
        "digits": ("examples/digits_recipe.toml", "digits", "MLP", "-")}


def run(key: str, minutes: float, out: Path) -> dict:
    path, data, model, paper = RUNS[key]
    cfg = load_config(ROOT / path)
    space, _ = settings_from_table(cfg.sections["search"])
    task = bs.Task.from_config(cfg.task)
    start = time.perf_counter()
    r = bs.recipe(task, space, budget=bs.Budget(minutes=minutes), dir=out / key, fixed=dict(cfg.hp),
                  progress=lambda line: print(f"  [{key}] {line}", flush=True), progress_every=60)
    wall = time.perf_counter() - start
    by = {c.name: c for c in r.candidates}
    print(r.table(), flush=True)
    return {"key": key, "data": data, "model": model, "paper": paper, "minutes": minutes, "wall": wall,
            "result": r.result, "single": by["single"], "ensemble": by.get("ensemble"), "chosen": r.chosen}


def pct(c) -> str:
    return "-" if c is None or c.test_acc is None else f"{100 * c.test_acc:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--digits-minutes", type=float, default=2.0)
    ap.add_argument("--only", choices=sorted(RUNS), action="append")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only or ["cnn", "mlp", "digits"]:
            rows.append(run(key, args.digits_minutes if key == "digits" else args.minutes, Path(tmp)))
    print("\n| data | model | budget | recipe result (test) | 95% interval | chosen | best single | ensemble "
          "| wall time | paper |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        res = r["result"]
        print(f"| {r['data']} | {r['model']} | {r['minutes']:g} min | {pct(res)} | [{100 * res.test_low:.1f}%, "
              f"{100 * res.test_high:.1f}%] | {r['chosen']} | {pct(r['single'])} | {pct(r['ensemble'])} | "
              f"{r['wall'] / 60:.1f} min | {r['paper']} |")


if __name__ == "__main__":
    main()
