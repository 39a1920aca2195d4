"""BabysitCallback: a real lightning.Trainer.fit on a tiny model writes a run that diagnose and report read."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import babysit as bs

pl = pytest.importorskip("lightning.pytorch")

from babysit.integrations.lightning import BabysitCallback  # noqa: E402


class Tiny(pl.LightningModule):
    def __init__(self, lr):
        super().__init__()
        self.net = bs.models.mlp((64,), 10, hidden=(32,))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, i):
        x, y = batch
        scores = self(x)
        self.log("train_acc", (scores.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
        return F.cross_entropy(scores, y)

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def test_lightning_trainer_fit_is_watched(tmp_path):
    torch.manual_seed(0)
    d = bs.data.load("digits", seed=0)
    xv, yv = bs.data.tensors(d.val)
    train = torch.utils.data.DataLoader(d.train, batch_size=32, shuffle=True)
    val = torch.utils.data.DataLoader(d.val, batch_size=256)
    cb = BabysitCallback(tmp_path / "lit", num_classes=10, probe=(xv, yv))
    trainer = pl.Trainer(max_epochs=3, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Tiny(3e-3), train, val)
    h = bs.store.read_history(tmp_path / "lit")
    steps = 3 * len(train)
    assert len(h.loss) == steps and len(h.series("update_ratio/net.fc1.weight")) == steps // 10
    assert [e.epoch for e in h.epochs] == [1, 2, 3] and h.epochs[-1].val_acc > 0.85
    assert h.epochs[-1].train_acc > 0.85 and h.meta["status"] == "completed"
    assert h.series("act_dead/net.act1").values and h.arrays
    assert not {f.code for f in bs.diagnose(tmp_path / "lit") if f.severity != "info"}
