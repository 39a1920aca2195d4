"""Forked workers and OpenMP: a master that already ran torch on several threads hands its workers one thread
(GNU OpenMP hangs a forked child's first parallel region otherwise); a fresh master hands them their share."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).parents[1] / "src")


def _probe(warm: bool) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {SRC!r})
        import torch
        torch.set_num_threads(2)
        if {warm}:
            a = torch.ones(512, 512); (a @ a).sum(); torch.ones(1 << 22).sum()   # OpenMP's pool starts here
        from babysit.search.launchers.local import fork_safe_threads
        print(fork_safe_threads(2))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("warm, threads", [(False, "2"), (True, "1")])
def test_workers_get_their_share_unless_the_master_started_openmp(warm, threads):
    r = _probe(warm)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == threads
    assert ("cannot use again" in r.stderr) == warm
