"""Tests for babysit.models: shapes, layer names, inits, chance-level start, registry, errors."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit import models
from babysit.errors import ConfigError


def test_mlp_shapes_and_layer_names() -> None:
    m = models.mlp((8, 8), 10, hidden=(32, 16), dropout=0.5)
    assert list(dict(m.named_children())) == [
        "flatten", "fc1", "act1", "drop1", "fc2", "act2", "drop2", "fc3"
    ]
    assert m(torch.randn(7, 8, 8)).shape == (7, 10)
    assert m.fc1.in_features == 64 and m.fc3.out_features == 10
    plain = models.mlp(40, 3, hidden=(5,))
    assert list(dict(plain.named_children())) == ["flatten", "fc1", "act1", "fc2"]
    linear = models.mlp((2,), 3, hidden=())
    assert list(dict(linear.named_children())) == ["flatten", "fc1"]


def test_cnn1d_shapes_and_layer_names() -> None:
    m = models.cnn1d((40,), 10)
    names = list(dict(m.named_children()))
    assert names[0] == "reshape" and names[-2:] == ["flatten", "fc"]
    assert [n for n in names if n.startswith("conv")] == ["conv1", "conv2", "conv3"]
    assert m(torch.randn(4, 40)).shape == (4, 10)
    two_channel = models.cnn1d((2, 33), 5, channels=(8, 8), kernel_size=4, dropout=0.1)
    assert "reshape" not in dict(two_channel.named_children()) and "drop2" in dict(two_channel.named_children())
    assert two_channel(torch.randn(3, 2, 33)).shape == (3, 5)
    with pytest.raises(ConfigError, match="input_shape"):
        models.cnn1d((2, 3, 4), 10)


def test_cnn1d_learns_mnist1d_quickly() -> None:
    from babysit import data

    splits = data.load("mnist1d")
    x, y = splits.train.tensors
    xt, yt = splits.test.tensors
    torch.manual_seed(0)
    model = models.cnn1d(splits.input_shape, 10, channels=(16, 16, 16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(0, len(x), 64):  # one epoch
        loss = F.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.25  # chance is 0.1; ~0.38 after one epoch, >= 0.87 after 20 (lr 1e-3, width 32)


@pytest.mark.parametrize("activation", models.ACTIVATIONS)
def test_activations(activation: str) -> None:
    m = models.mlp(4, 3, hidden=(6,), activation=activation)
    kind = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh}[activation]
    assert isinstance(m.act1, kind)
    c = models.cnn1d(16, 3, channels=(4,), activation=activation)
    assert isinstance(c.act1, kind)


@pytest.mark.parametrize(
    ("init", "activation", "gain"),
    [
        ("kaiming", "relu", math.sqrt(2.0)),
        ("kaiming", "tanh", 5.0 / 3.0),
        ("kaiming", "leaky_relu", math.sqrt(2.0 / (1 + 0.01**2))),
        ("xavier", "relu", None),
        ("small", "relu", None),
    ],
)
def test_init_scales(init: str, activation: str, gain: float | None) -> None:
    torch.manual_seed(0)
    fan_in, fan_out = 400, 300
    m = models.mlp(fan_in, 10, hidden=(fan_out,), activation=activation, init=init)
    if init == "kaiming":
        expected = gain / math.sqrt(fan_in)
    elif init == "xavier":
        expected = (5.0 / 3.0) * math.sqrt(2.0 / (fan_in + fan_out))
    else:
        expected = 0.01
    assert m.fc1.weight.std().item() == pytest.approx(expected, rel=0.03)
    assert m.fc1.bias.abs().max() == 0 and m.fc2.bias.abs().max() == 0
    # the last layer: the same scheme, then scaled by 0.01
    assert m.fc2.weight.std().item() < 0.02 * m.fc1.weight.std().item()


@pytest.mark.parametrize("init", models.INITS)
def test_last_layer_small_gives_chance_loss(init: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 40)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.randint(0, 10, (512,))
    for model in (models.mlp((40,), 10, hidden=(100, 100), init=init), models.cnn1d((40,), 10, init=init)):
        loss = F.cross_entropy(model(x), y).item()
        assert loss == pytest.approx(math.log(10), rel=0.01)


def test_from_hp_reads_its_keys_and_ignores_others() -> None:
    hp = {"width": 12, "depth": 3, "dropout": 0.2, "activation": "tanh", "lr": 0.1, "reg": 1e-4, "optimizer": "adam"}
    m = models.from_hp("mlp", hp, (40,), 10)
    assert [m.fc1.out_features, m.fc2.out_features, m.fc3.out_features, m.fc4.out_features] == [12, 12, 12, 10]
    assert isinstance(m.act1, nn.Tanh) and m.drop1.p == 0.2
    default = models.from_hp("mlp", {}, 40, 10)
    assert [default.fc1.out_features, default.fc2.out_features] == [128, 128] and not hasattr(default, "fc4")
    c = models.from_hp("cnn1d", {"width": 8, "depth": 2, "kernel_size": 3}, (40,), 10)
    assert c.conv1.out_channels == 8 and c.conv2.kernel_size == (3,) and not hasattr(c, "conv3")
    assert c(torch.randn(2, 40)).shape == (2, 10)


def test_resolve_builtins_and_import_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert models.resolve("mlp") is models.MODELS["mlp"]
    assert models.resolve("cnn1d") is models.MODELS["cnn1d"]
    (tmp_path / "my_models_pkg.py").write_text(textwrap.dedent("""
        from torch import nn

        def tiny(hp, input_shape, num_classes):
            return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], num_classes))

        not_callable = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = models.resolve("my_models_pkg:tiny")
    m = models.from_hp("my_models_pkg:tiny", {"width": 3}, (7,), 4)
    assert fn.__name__ == "tiny" and m(torch.randn(2, 7)).shape == (2, 4)
    with pytest.raises(ConfigError, match="has no attribute 'missing'"):
        models.resolve("my_models_pkg:missing")
    with pytest.raises(ConfigError, match="not callable"):
        models.resolve("my_models_pkg:not_callable")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        models.resolve("no_such_module_xyz:fn")
    with pytest.raises(ConfigError, match="package.module:function"):
        models.resolve("my_models_pkg:")
    sys.modules.pop("my_models_pkg", None)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: models.mlp(4, 3, activation="sigmoid"), "activation='sigmoid'.*leaky_relu, relu, tanh"),
        (lambda: models.mlp(4, 3, init="he"), "init='he'.*kaiming, small, xavier"),
        (lambda: models.mlp(4, 3, dropout=1.0), r"dropout=1.0.*\[0, 1\)"),
        (lambda: models.cnn1d(40, 3, dropout=-0.1), "dropout=-0.1"),
        (lambda: models.mlp(4, 3, hidden=(0,)), "hidden=0"),
        (lambda: models.mlp(4, 1), "num_classes=1"),
        (lambda: models.from_hp("mlp", {"width": 0}, (4,), 3), r"hp\['width'\]=0"),
        (lambda: models.from_hp("cnn1d", {"depth": 0}, (4,), 3), r"hp\['depth'\]=0"),
        (lambda: models.from_hp("mlp", {"depth": 1.5}, (4,), 3), r"hp\['depth'\]=1.5"),
        (lambda: models.from_hp("resnet", {}, (4,), 3), "model='resnet'.*cnn1d, cnn1d_paper, mlp.*package.module:function"),
    ],
)
def test_bad_input_messages(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        call()


def test_cnn1d_paper_is_the_mnist1d_papers_convbase():
    """Greydanus 2020's ConvBase: stride-2 convs (5, 3, 3; padding 1) of 25 channels, 125 -> 10 linear."""
    import torch

    import babysit as bs

    model = bs.models.from_hp("cnn1d_paper", {}, (40,), 10)
    convs = [m for m in model if isinstance(m, torch.nn.Conv1d)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0], c.out_channels) for c in convs] == \
        [(5, 2, 1, 25), (3, 2, 1, 25), (3, 2, 1, 25)]
    assert model.fc.in_features == 125 and sum(p.numel() for p in model.parameters()) == 5210
    assert model(torch.randn(7, 40)).shape == (7, 10)
    wide = bs.models.from_hp("cnn1d_paper", {"channels": 64}, (40,), 10)
    assert wide.fc.in_features == 64 * 5
    task = bs.Task(build="cnn1d_paper", data="mnist1d")
    assert task.resolve_hp({})["channels"] == 25 and "width" not in task.resolve_hp({})


def test_cnn1d_paper_refuses_inputs_too_short_for_its_strides():
    import pytest

    import babysit as bs

    with pytest.raises(bs.ConfigError, match="too short"):
        bs.models.cnn1d_paper((1,), 10)
