"""Update:weight ratios and gradient norms from the optimizer's own step hooks.

Delta-theta is the parameters' actual change across optimizer.step() (a copy before, a
subtraction after), so the ratio is right for every update rule, not only vanilla SGD. One
torch._foreach_norm call covers all parameters; results stay on the device until flush().
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

__all__ = ["UpdateTracker"]


class UpdateTracker:
    """Measures ||dtheta||, ||theta|| and ||grad|| of every tracked parameter on the steps it is armed for."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[tuple[str, nn.Parameter]],
                 on_step: Callable[[], None]) -> None:
        self.names = [n for n, _ in params]
        self.params = [p for _, p in params]
        self.armed = False
        self.pending: list[tuple[int, list[torch.Tensor]]] = []
        self._bufs: list[torch.Tensor] = []
        self._grad_norms: list[torch.Tensor] = []
        self._on_step = on_step
        self.step = 0
        self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self.armed or not self.params:
            return
        with torch.no_grad():
            grads = [p.grad if p.grad is not None and not p.grad.is_sparse else torch.zeros((), device=p.device)
                     for p in self.params]
            self._grad_norms = list(torch._foreach_norm(grads))
            if len(self._bufs) != len(self.params):
                self._bufs = [torch.empty_like(p) for p in self.params]
            torch._foreach_copy_(self._bufs, [p.detach() for p in self.params])

    def _post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.step += 1
        if self.armed and self.params and self._grad_norms:
            with torch.no_grad():
                detached = [p.detach() for p in self.params]
                torch._foreach_sub_(self._bufs, detached)
                # 0-d tensors kept as they are: one torch.stack at drain() instead of several per step
                stats = [*torch._foreach_norm(self._bufs), *torch._foreach_norm(detached), *self._grad_norms]
            self.pending.append((self.step, stats))
            self._grad_norms = []
        self._on_step()

    def drain(self) -> list[tuple[int, str, float, float, float]]:
        """Returns (step, name, ||dtheta||/||theta||, ||grad||, ||theta||) rows pending, in one host sync."""
        if not self.pending:
            return []
        steps = [s for s, _ in self.pending]
        flat = torch.stack([t.float() for _, ts in self.pending for t in ts]).cpu().tolist()
        self.pending.clear()
        p, rows = len(self.names), []
        for k, step in enumerate(steps):
            block = flat[3 * p * k: 3 * p * (k + 1)]
            for name, d, w, g in zip(self.names, block[:p], block[p:2 * p], block[2 * p:]):
                rows.append((step, name, d / w if w > 0 else float("nan"), g, w))
        return rows

    def remove(self) -> None:
        """Detaches the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
