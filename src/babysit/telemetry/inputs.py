"""What watch() is handed: the eager module behind torch.compile, an optimizer that owns the model, the probe."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data import tensors
from ..errors import ConfigError

__all__ = ["unwrap", "check_owned", "probe_tensors"]


def unwrap(model: nn.Module) -> tuple[nn.Module, bool]:
    """Returns (the eager module, whether model is a torch.compile wrapper)."""
    orig = getattr(model, "_orig_mod", None)
    return (orig, True) if isinstance(orig, nn.Module) else (model, False)


def check_owned(optimizer: torch.optim.Optimizer, trainable: list[tuple[str, nn.Parameter]]) -> list[str]:
    """Returns the trainable parameters the optimizer does not own; raises when it owns none of them."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"watch(optimizer=...) must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
    missing = [n for n, p in trainable if id(p) not in owned]
    if trainable and len(missing) == len(trainable):
        raise ConfigError(f"watch: the optimizer owns none of the model's {len(trainable)} trainable parameters "
                          f"({', '.join(missing[:3])}...); build it from this model, e.g. "
                          "torch.optim.SGD(model.parameters(), lr=0.01), after any .to(device)")
    return missing


def probe_tensors(probe: Any, limit: int, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Returns (x, y or None) of at most `limit` probe examples from a tensor, an (x, y) pair or a Dataset."""
    if probe is None:
        return None, None
    if isinstance(probe, torch.Tensor):
        return probe[:limit].to(device), None
    if isinstance(probe, (tuple, list)) and len(probe) == 2 and isinstance(probe[0], torch.Tensor):
        return probe[0][:limit].to(device), torch.as_tensor(probe[1])[:limit].to(device)
    if isinstance(probe, torch.utils.data.Dataset):
        x, y = tensors(probe if isinstance(probe, torch.utils.data.TensorDataset)
                       else torch.utils.data.Subset(probe, range(min(len(probe), limit))))  # type: ignore[arg-type]
        return x[:limit].to(device), y[:limit].to(device)
    raise ConfigError(f"watch(probe=...) must be inputs x, a pair (x, y) or a Dataset, got {type(probe).__name__}")
