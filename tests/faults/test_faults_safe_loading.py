"""Safe loading everywhere: no source file unpickles arbitrary objects (checkpoints, caches, exports)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "babysit"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            kw = {k.arg: k.value for k in node.keywords}
            yield name, kw, node.lineno


def test_no_source_file_can_unpickle_code():
    bad = []
    for path in SRC.rglob("*.py"):
        for name, kw, line in _calls(ast.parse(path.read_text())):
            where = f"{path.relative_to(SRC)}:{line}"
            if name == "torch.load" and not (isinstance(kw.get("weights_only"), ast.Constant)
                                             and kw["weights_only"].value is True):
                bad.append(f"{where} torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load", "cloudpickle.load"):
                bad.append(f"{where} {name}")
            if name in ("np.load", "numpy.load") and not (isinstance(kw.get("allow_pickle"), ast.Constant)
                                                          and kw["allow_pickle"].value is False):
                bad.append(f"{where} np.load without allow_pickle=False")
    assert not bad, bad


def test_the_scan_sees_a_bad_call():
    tree = ast.parse("import torch\ntorch.load(p)\nnp.load(p)\npickle.loads(b)\ntorch.load(p, weights_only=True)")
    names = [(n, sorted(k)) for n, k, _ in _calls(tree)]
    assert names == [("torch.load", []), ("np.load", []), ("pickle.loads", []), ("torch.load", ["weights_only"])]
