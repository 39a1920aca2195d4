"""config.toml of a run directory: written atomically, read back as plain data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from ..errors import StoreError
from .files import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["write_config", "read_config"]


def write_config(run_dir: str | Path, config: Mapping[str, Any]) -> None:
    """Writes config.toml atomically (None values dropped: TOML has no null)."""
    text = tomli_w.dumps(_drop_none(config)).encode()
    atomic_write(Path(run_dir) / "config.toml", lambda f: f.write(text))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Returns the parsed config.toml of a run directory."""
    p = Path(run_dir) / "config.toml"
    if not p.is_file():
        raise StoreError(f"{str(run_dir)!r} is not a babysit run directory (no config.toml)")
    return tomllib.loads(p.read_text())


def _drop_none(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, (list, tuple)):
        return [_drop_none(v) for v in x]
    return x
