"""A custom model for babysit: any function (hp, input_shape, num_classes) -> nn.Module.

Name it in a config as "my_models:residual_mlp" (babysit puts the config file's folder on the
import path; elsewhere make the module importable, e.g. PYTHONPATH=examples).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn


class ResidualMLP(nn.Module):
    """An MLP whose hidden layers add their input back (x + f(x))."""

    def __init__(self, d_in: int, width: int, depth: int, num_classes: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.fc_out = nn.Linear(width, num_classes)
        with torch.no_grad():  # the notes: small last layer -> the loss starts at chance
            self.fc_out.weight.mul_(0.01)
            self.fc_out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc_in(x.flatten(1)))
        for block in self.blocks:
            h = h + torch.relu(block(h))
        return self.fc_out(h)


def residual_mlp(hp: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Returns a residual MLP sized by hp["width"] and hp["depth"]."""
    return ResidualMLP(math.prod(input_shape), int(hp.get("width", 128)), int(hp.get("depth", 2)), num_classes)
