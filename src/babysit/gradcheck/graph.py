"""The autograd graph of a checked loss: its custom Function nodes, and which of them the loss depends on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

__all__ = ["custom_nodes", "function_classes", "reached"]


def custom_nodes(root: torch.Tensor) -> list[Any]:
    """Returns the nodes of the user's custom autograd.Functions in the graph of `root`, walking grad_fn."""
    found: list[Any] = []
    seen: set[int] = set()
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if cls is not None and not cls.__module__.startswith("torch."):
            found.append(node)
        stack.extend(n for n, _ in node.next_functions)
    return found[::-1]  # roughly forward order


def function_classes(nodes: Sequence[Any], live: set[Any] | None = None) -> list[Any]:
    """Returns the distinct Function classes of the nodes (only those in `live` when given), in order."""
    out: list[Any] = []
    for node in nodes:
        cls = node._forward_cls
        if cls not in out and (live is None or cls in live):
            out.append(cls)
    return out


@contextlib.contextmanager
def reached(nodes: Sequence[Any]) -> Iterator[set[Any]]:
    """Yields the set that receives every Function class whose node gets a nonzero gradient in the block.

    A Function whose upstream gradient is all zeros (a data loss switched off with * 0) does not shape
    the loss at this point, so it is not checked alone there.
    """
    live: set[Any] = set()

    def hook(grads: tuple, cls: Any) -> None:
        if any(isinstance(g, torch.Tensor) and bool(g.ne(0).any()) for g in grads):
            live.add(cls)

    handles = [n.register_prehook(lambda grads, c=n._forward_cls: hook(grads, c)) for n in nodes]
    try:
        yield live
    finally:
        for h in handles:
            h.remove()
