"""A plain PyTorch loop on the digits, babysat in four lines (marked # babysit).

Their data lands in run_dir/run.sqlite; diagnose and report read it as they read a train() run.

    PYTHONPATH=src python examples/plain_loop.py runs/plain   # then: babysit diagnose runs/plain; babysit report runs/plain
"""

import sys

import torch
import torch.nn.functional as F

import babysit as bs

splits = bs.data.load("digits")
x, y = bs.data.tensors(splits.train)
xv, yv = bs.data.tensors(splits.val)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/plain"

with bs.watch(model, opt, run_dir, num_classes=10, probe=(xv, yv)) as w:  # babysit
    for epoch in range(10):
        for i in torch.randperm(len(x)).split(32):
            loss = F.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step(loss)  # babysit
        with torch.no_grad():
            acc = lambda a, b: (model(a).argmax(1) == b).float().mean().item()  # noqa: E731
            w.epoch(train_acc=acc(x, y), val_acc=acc(xv, yv))  # babysit
print(bs.report(w.dir))  # babysit
