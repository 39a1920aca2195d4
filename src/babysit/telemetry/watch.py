"""watch(model, optimizer, run_dir, ...) -> Watch: the notes' instruments on any PyTorch loop, into run.sqlite.

Everything attaches from outside the step with torch's removable hooks: optimizer step pre/post
hooks (update:weight ratios, gradient norms), forward hooks only on the steps that sample
activations, tensor hooks on layer outputs for gradient histograms. close() removes them all.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .._version import __version__
from ..errors import ConfigError
from ..losses import resolve as resolve_loss
from ..store import (ArraySnapshot, EpochRecord, Histogram, History, RunStore, Series, encode_array, now,
                     read_config, write_config)
from ..store.records import epoch_records
from .inputs import check_owned, probe_tensors, unwrap
from .layers import Layer, first_weight_layer, named_trainable, watched_layers
from .stats import BATCH_STATS, batch_stats, histogram, input_stats, probe_pass
from .updates import UpdateTracker

__all__ = ["Watch", "watch", "DEFAULTS"]

# Defaults chosen to meet the cost targets (bench/monitor_overhead.py, <= 1.05x): update ratios and
# gradient norms every 10 steps, training-batch activations every 50, a probe pass with histograms
# every 500 steps and at every epoch's end. every=1, act_every=1 is the notes' full set each step.
DEFAULTS: dict[str, Any] = {"every": 10, "act_every": 50, "hist_every": 500, "bins": 32, "hist_keep": 64,
                            "array_keep": 32, "max_probe": 1024, "max_filters": 64, "hist_probe": 512}
_MIRROR = 4096  # scalars per key kept in memory for the live rules (plus the first 256)


class Watch:
    """Telemetry attached to one model and optimizer; see watch() for the arguments."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: str | Path | None = None,
                 num_classes: int | None = None, loss: Any = "softmax", probe: Any = None, *,
                 store: RunStore | None = None, start_step: int = 0, start_epoch: int = 0, **options: Any) -> None:
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"watch: unknown option(s) {unknown}; valid: {', '.join(sorted(DEFAULTS))}")
        self.opts = {**DEFAULTS, **options}
        for k, v in self.opts.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"watch({k}={v!r}): must be an integer >= 0 (0 turns it off)")
        if store is None and run_dir is None:
            raise ConfigError("watch: pass run_dir, the directory where run.sqlite is written")
        self.model, self.optimizer = model, optimizer
        self.eager, self.compiled = unwrap(model)
        trainable, frozen, shared = named_trainable(self.eager)
        missing = check_owned(optimizer, trainable)
        self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self.loss_kind = "custom"
        if loss is not None:
            self.loss_fn, self.loss_kind = resolve_loss(loss)
        self.num_classes = num_classes
        self.own_store = store is None
        self.store = store if store is not None else self._open(Path(run_dir))  # type: ignore[arg-type]
        self.dir = Path(self.store.path).parent
        self.layers = watched_layers(self.eager)
        # per-step batch statistics on activation modules (the probe covers every layer); Linear/Conv
        # outputs only when the model has no activation module to watch
        acts = {layer.name for layer in self.layers if not layer.has_weight}
        self._act_layers = acts or {layer.name for layer in self.layers}
        device = next((p.device for p in self.eager.parameters()), torch.device("cpu"))
        self.probe_x, self.probe_y = probe_tensors(probe, self.opts["max_probe"], device)
        self.start_step, self.epochs_done, self._epoch_start_step = start_step, start_epoch, start_step
        self.position = float(start_epoch)  # the current (fractional) epoch
        self._epoch_started = time.perf_counter()
        self._epoch_of: dict[int, float] = {}  # train's exact (fractional) epoch of each step
        self._mirror: dict[str, deque[tuple[int, float, float]]] = {}
        self._head: dict[str, list[tuple[int, float, float]]] = {}
        self._epochs: dict[int, dict[str, float]] = {}
        self._losses: list[tuple[int, float, Any]] = []
        self._batch: list[tuple[int, str, tuple[str, ...], list[torch.Tensor]]] = []
        self._grads: list[tuple[str, torch.Tensor]] = []
        self._hooks: list[Any] = []
        self._grad_next = True
        self._config: dict[str, Any] | None = None
        self._drained_at = time.monotonic()
        self.tracker = UpdateTracker(optimizer, trainable, self._after_step)
        self._write_meta(trainable, frozen, shared, missing)
        self._auto: list[torch.Tensor] = []
        self._auto_hook = None
        if self.probe_x is None:
            self._auto_hook = model.register_forward_pre_hook(self._collect_probe)
        elif start_step == 0:
            self._start_probe()
        self._arm(self.global_step + 1)

    # ------------------------------------------------------------------ set-up

    def _open(self, run_dir: Path) -> RunStore:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "config.toml").is_file():
            write_config(run_dir, {"babysit": {"version": __version__, "torch": torch.__version__},
                                   "watch": {"model": type(self.eager).__name__,
                                             "optimizer": type(self.optimizer).__name__,
                                             "lr": float(self.optimizer.param_groups[0].get("lr", float("nan"))),
                                             "loss": self.loss_kind, **({"num_classes": self.num_classes}
                                                                        if self.num_classes else {})}})
        store = RunStore(run_dir)
        store.set_meta(babysit_version=__version__, torch_version=torch.__version__, status="running",
                       started=now())
        return store

    def _write_meta(self, trainable: list[tuple[str, nn.Parameter]], frozen: list[str],
                    shared: Mapping[str, list[str]], missing: list[str]) -> None:
        unseen = []
        if not self.layers:
            unseen.append("no Linear, Conv or activation module: no activation statistics (update ratios and "
                          "gradient norms are still recorded)")
        if self.compiled:
            unseen.append("torch.compile'd model: activations come from the probe pass on the eager module; "
                          "training-batch activations and output-gradient histograms are not recorded")
        self.store.set_meta(telemetry="on", num_classes=self.num_classes, loss_kind=self.loss_kind,
                            params=json.dumps({n: p.numel() for n, p in trainable}), frozen=json.dumps(frozen),
                            shared=json.dumps(dict(shared)), not_in_optimizer=json.dumps(missing),
                            layers=json.dumps({layer.name: layer.kind for layer in self.layers}),
                            unseen=json.dumps(unseen), probe="given" if self.probe_x is not None else "training")

    @property
    def global_step(self) -> int:
        """Returns the number of optimizer steps so far (counting those before a resume)."""
        return self.start_step + self.tracker.step

    # ------------------------------------------------------------------ the user's calls

    def step(self, loss: Any = None) -> None:
        """Records the step's loss (a tensor is read at the next flush, not now); call after optimizer.step()."""
        if loss is not None:
            value = loss.detach() if isinstance(loss, torch.Tensor) else float(loss)
            self._losses.append((self.global_step, self.position, value))

    def epoch(self, train_acc: float | None = None, val_acc: float | None = None, *, train_loss: float | None = None,
              val_loss: float | None = None) -> None:
        """Ends an epoch of a hand-written loop: records what it knows, then probes and stores the first layer."""
        step, e = self.global_step, self.epochs_done + 1
        lr = float(self.optimizer.param_groups[0].get("lr", float("nan")))
        fields = {"train_acc": train_acc, "val_acc": val_acc, "train_loss": train_loss, "val_loss": val_loss,
                  "lr": lr, "seconds": time.perf_counter() - self._epoch_started}
        rows = [(step, float(e), f"epoch/{k}", float(v)) for k, v in fields.items() if v is not None]
        self._log(rows)
        self._drain()
        self.store.interpolate_epochs(self._epoch_start_step, step, float(self.epochs_done), float(e))
        self._end_epoch(e)

    def _end_epoch(self, epoch: int) -> None:
        self.epochs_done, self.position, self._epoch_start_step = epoch, float(epoch), self.global_step
        self._epoch_started = time.perf_counter()
        self._disarm()
        self._grad_next = True
        self._arm(self.global_step + 1)
        self._probe(self.global_step)
        self._first_layer(self.global_step)
        self._drain()
        self.store.flush()

    def close(self, status: str | None = "completed") -> None:
        """Writes what is pending and removes every hook; a watch-owned store is closed with `status`."""
        self._drain()
        self._disarm()
        self.tracker.remove()
        if self._auto_hook is not None:
            self._auto_hook.remove()
            self._auto_hook = None
        if self.own_store:
            if status is not None:
                self.store.set_meta(status=status, finished=now())
            self.store.close()
        else:
            self.store.flush()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close("failed" if exc_type is not None and exc_type is not KeyboardInterrupt
                   else "interrupted" if exc_type is KeyboardInterrupt else "completed")

    @property
    def observer(self) -> "TrainObserver":
        """Returns the observer through which train() feeds this watch (it logs loss and epochs itself)."""
        return TrainObserver(self)

    # ------------------------------------------------------------------ hooks

    def _after_step(self) -> None:
        """Runs in the optimizer's post-step hook: collects the step's samples, arms the next step."""
        step = self.global_step
        self._disarm()
        if self._grads:
            self._grad_histograms(step)
        if self.opts["hist_every"] and step % self.opts["hist_every"] == 0:
            self._probe(step, full=False)
        if len(self.tracker.pending) >= 64 or time.monotonic() - self._drained_at > 2.0:
            self._drain()
        self._arm(step + 1)

    def _arm(self, step: int) -> None:
        self.tracker.armed = bool(self.opts["every"]) and step % self.opts["every"] == 0
        if self.compiled:
            return
        act = bool(self.opts["act_every"]) and step % self.opts["act_every"] == 0
        # output gradients: every hist_every steps, and on the first step of every epoch (the heat-map's columns)
        grad = bool(self.opts["hist_every"]) and (step % self.opts["hist_every"] == 0 or self._grad_next)
        self._grad_next = False
        if not (act or grad):
            return
        for layer in self.layers:
            if grad or (act and layer.name in self._act_layers):
                self._hooks.append(layer.module.register_forward_hook(self._batch_hook(layer, step, act, grad)))

    def _disarm(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def _batch_hook(self, layer: Layer, step: int, act: bool, grad: bool) -> Callable[..., None]:
        def fn(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor) or not module.training or not torch.is_grad_enabled():
                return
            if act and layer.name in self._act_layers:
                names = BATCH_STATS.get(layer.kind, BATCH_STATS["relu"][:2])
                self._batch.append((step, layer.name, names, batch_stats(output, layer.kind)))
            if grad and output.requires_grad:
                output.register_hook(lambda g: self._grads.append((layer.name, g.detach())))
        return fn

    def _collect_probe(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Keeps the first training inputs as the probe when none was given (they are not held out)."""
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if x is None or not module.training or not torch.is_grad_enabled() or getattr(self, "_probing", False):
            return
        self._auto.append(x.detach().clone())
        first = self.probe_x is None
        self.probe_x = torch.cat(self._auto)[: self.opts["max_probe"]]
        if first and self.start_step == 0:
            self._probing = True
            try:
                self._start_probe()
            finally:
                self._probing = False
        if len(self.probe_x) >= self.opts["max_probe"] and self._auto_hook is not None:
            self._auto_hook.remove()
            self._auto_hook, self._auto = None, []

    # ------------------------------------------------------------------ measurements

    def _start_probe(self) -> None:
        """Step 0: the inputs' scale, the loss at initialisation, the first layer before training."""
        assert self.probe_x is not None
        self._log([(0, 0.0, f"input/{k}", v) for k, v in input_stats(self.probe_x).items()])
        self._probe(0)
        self._first_layer(0)

    def _probe(self, step: int, full: bool = True) -> None:
        """Probes at an epoch's end with the whole probe; between epochs histograms from its first hist_probe."""
        if self.probe_x is None:
            return
        n = len(self.probe_x) if full else self.opts["hist_probe"]
        res = probe_pass(self.eager, self.layers, self.probe_x[:n], None if self.probe_y is None else self.probe_y[:n],
                         self.loss_fn, self.opts["bins"] if self.opts["hist_every"] else 0, units=full)
        self._log([(step, self.position, k, v) for k, v in res.scalars.items()])
        if res.histograms:
            self.store.add_histograms([Histogram(step, self.position, name, "act", tuple(c), tuple(e))
                                       for name, c, e in res.histograms], keep=self.opts["hist_keep"])

    def _grad_histograms(self, step: int) -> None:
        grads, self._grads = self._grads, []
        rows = []
        for name, g in grads:
            counts, edges = histogram(g, self.opts["bins"])
            rows.append(Histogram(step, self.position, name, "grad", tuple(counts), tuple(edges)))
        if rows:
            self.store.add_histograms(rows, keep=self.opts["hist_keep"])

    def _first_layer(self, step: int) -> None:
        found = first_weight_layer(self.eager)
        if found is None or not self.opts["max_filters"]:
            return
        name, module = found
        weight: torch.Tensor = module.weight  # type: ignore[assignment]
        w = weight.detach()[: self.opts["max_filters"]].float().cpu()
        snap = ArraySnapshot(step, self.position, f"first_layer/{name}", tuple(w.shape), ())
        self.store.add_array(snap, encode_array(w.numpy()), keep=self.opts["array_keep"])

    # ------------------------------------------------------------------ writing

    def _drain(self) -> None:
        """Moves every pending measurement to the store, in one host synchronisation per kind."""
        self._drained_at = time.monotonic()
        at, pos = self._epoch_of, self.position
        self._epoch_of = {}
        rows = [(s, at.get(s, pos), f"{k}/{n}", v) for s, n, r, g, w in self.tracker.drain()
                for k, v in (("update_ratio", r), ("grad_norm", g), ("weight_norm", w))]
        if self._batch:
            values = iter(torch.stack([t for _, _, _, ts in self._batch for t in ts]).cpu().tolist())
            rows += [(s, at.get(s, pos), f"{k}/{layer}", next(values)) for s, layer, names, _ in self._batch
                     for k in names]
            self._batch.clear()
        if self._losses:
            tensors_ = [v for _, _, v in self._losses if isinstance(v, torch.Tensor)]
            values = iter(torch.stack([t.float() for t in tensors_]).cpu().tolist() if tensors_ else [])
            rows += [(s, e, "loss", next(values) if isinstance(v, torch.Tensor) else v) for s, e, v in self._losses]
            self._losses.clear()
        self._log(rows)

    def _log(self, rows: list[tuple[int, float, str, float]]) -> None:
        self.store.log_many(rows)
        for step, epoch, key, value in rows:
            head = self._head.setdefault(key, [])
            if len(head) < 256:
                head.append((step, epoch, value))
            else:
                self._mirror.setdefault(key, deque(maxlen=_MIRROR)).append((step, epoch, value))
            if key.startswith("epoch/"):
                self._epochs.setdefault(int(round(epoch)), {})[key[6:]] = value

    def mirror(self, key: str, step: int, epoch: float, value: float) -> None:
        """Keeps a scalar logged by someone else (train's loss) for the live rules, without writing it."""
        self._head.setdefault(key, [])
        if len(self._head[key]) < 256:
            self._head[key].append((step, epoch, value))
        else:
            self._mirror.setdefault(key, deque(maxlen=_MIRROR)).append((step, epoch, value))

    def snapshot(self) -> History:
        """Returns a History of what this watch holds in memory (bounded): what the live rules read."""
        self._drain()
        scalars = {}
        for key, head in self._head.items():
            rows = head + list(self._mirror.get(key, ()))
            scalars[key] = Series(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows))
        if self._config is None:  # written once before training: read once
            self._config = read_config(self.dir) if (self.dir / "config.toml").is_file() else {}
        return History(meta=self.store.meta(), config=self._config, epochs=epoch_records(self._epochs),
                       scalars=scalars, dir=self.dir)


class TrainObserver:
    """Feeds a Watch from train()'s observer calls: positions, the loss for the live rules, epoch ends."""

    def __init__(self, w: Watch) -> None:
        self.w = w

    def on_step(self, record: Any) -> None:
        self.w.position = self.w._epoch_of[record.step] = float(record.epoch)
        self.w.mirror("loss", record.step, record.epoch, record.loss)

    def on_epoch(self, record: EpochRecord) -> None:
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"):
            self.w._epochs.setdefault(record.epoch, {})[k] = getattr(record, k)
        self.w._end_epoch(record.epoch)

    def on_end(self, run: Any) -> None:
        self.w._drain()
        self.w.store.flush()


def watch(model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: str | Path | None = None,
          num_classes: int | None = None, loss: Any = "softmax", probe: Any = None, **options: Any) -> Watch:
    """Returns a Watch recording the notes' instruments of a hand-written loop into run_dir/run.sqlite.

    Call w.step(loss) after optimizer.step() and w.epoch(train_acc=..., val_acc=...) at the end of an
    epoch; close it (or use a with block). num_classes and probe ((x, y) of >= 1,000 held-out examples)
    let the rules that need them run: loss at init against chance, dead units on a fixed batch.
    Options (steps between samples, 0 = off): every, act_every, hist_every; bins, hist_keep, array_keep,
    max_probe, max_filters, hist_probe (examples of the probe used by the passes between epochs).
    """
    return Watch(model, optimizer, run_dir, num_classes, loss, probe, **options)
