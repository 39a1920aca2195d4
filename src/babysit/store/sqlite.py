"""run.sqlite: meta, scalars, histograms, arrays and findings, with forward schema migrations.

Every run directory ever written stays readable: opening a database applies the migrations from
its schema version up to SCHEMA_VERSION, in one transaction. Scalars are buffered and written in
one transaction at least every `flush_every` seconds, so logging every iteration costs a list append.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import StoreError
from .records import EPOCH_KEYS, ArraySnapshot, EpochRecord, Histogram, epoch_records

__all__ = ["SCHEMA_VERSION", "RunStore", "MIGRATIONS", "now", "recorded_sums"]

SCHEMA_VERSION = 3
# Version 1 (the first release): meta, scalars, and two tables nothing wrote yet.
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS scalars (step INTEGER NOT NULL, epoch REAL NOT NULL, key TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS scalars_key ON scalars (key, step);
CREATE TABLE IF NOT EXISTS histograms (step INTEGER, layer TEXT, kind TEXT, counts TEXT, edges TEXT);
CREATE TABLE IF NOT EXISTS findings (code TEXT, severity TEXT, message TEXT, evidence TEXT, advice TEXT);
"""


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Telemetry: the epoch of a histogram, first-layer arrays, and where a finding was raised."""
    db.execute("ALTER TABLE histograms ADD COLUMN epoch REAL")
    db.execute("CREATE INDEX IF NOT EXISTS histograms_layer ON histograms (layer, kind, step)")
    db.execute("CREATE TABLE IF NOT EXISTS arrays (step INTEGER NOT NULL, epoch REAL, name TEXT NOT NULL, "
               "shape TEXT NOT NULL, data BLOB NOT NULL)")
    db.execute("ALTER TABLE findings ADD COLUMN epoch REAL")
    db.execute("ALTER TABLE findings ADD COLUMN step INTEGER")


def _v2_to_v3(db: sqlite3.Connection) -> None:
    """Checksums: the sha256 and size of every checkpoint, recorded before the file is renamed into place."""
    db.execute("CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, epoch INTEGER, sha256 TEXT NOT NULL, "
               "size INTEGER NOT NULL, written TEXT)")


# MIGRATIONS[v] takes a database from version v to v + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3}


def now() -> str:
    """Returns the current UTC time in ISO 8601 (for meta)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row and row[0] is not None else 1


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Brings the database up to SCHEMA_VERSION; refuses one written by a newer babysit."""
    if _version(db) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")  # one writer migrates; the others re-read the version after it
    try:
        version = _version(db)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path} has schema version {version}; this babysit reads up to {SCHEMA_VERSION}: "
                             "upgrade babysit to read it")
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](db)
            version += 1
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


_TEMPLATE: bytes | None = None  # a new database at SCHEMA_VERSION in WAL mode, built once per process


def _template() -> bytes:
    """Returns the bytes of a new, empty database made by the migrations (so the two cannot drift)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        with tempfile.TemporaryDirectory(prefix="babysit-template-") as d:
            RunStore(d, template=False).close()  # the last close folds the WAL into the file
            _TEMPLATE = (Path(d) / "run.sqlite").read_bytes()
    return _TEMPLATE


def _create_from_template(path: Path) -> None:
    """Writes a new database as a copy of the template (nothing when the file appeared meanwhile).

    Creating the tables and switching to WAL took about 2.5 ms and an fsync per run, a tenth of the
    fixed cost of a short run; copying 40 kB of a database built once takes a few microseconds.
    """
    try:
        data = _template()
    except (OSError, sqlite3.Error):  # no usable temporary directory: the database is made in place
        return
    try:
        with open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        pass


class RunStore:
    """The run's SQLite database; scalars buffered and flushed every `flush_every` seconds or on demand."""

    def __init__(self, run_dir: str | Path, *, flush_every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, template: bool = True) -> None:
        self.path = Path(run_dir) / "run.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if template and not self.path.exists():
            _create_from_template(self.path)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a killed process loses nothing committed; only a power cut may drop the last seconds
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA_V1)
        _migrate(self._db, self.path)
        self._buffer: list[tuple[int, float, str, float]] = []
        self.flush_every, self._clock = flush_every, clock
        self._flushed_at = clock()

    def _write(self, sql: str, rows: Iterable[Sequence[Any]], *more: tuple[str, Iterable[Sequence[Any]]]) -> None:
        """Runs executemany(sql, rows), and each further (sql, rows), in one transaction."""
        self._db.execute("BEGIN")
        try:
            for statement, params in ((sql, rows), *more):
                self._db.executemany(statement, params)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def set_meta(self, **values: Any) -> None:
        """Writes meta keys (values stored as text; the schema version is the store's own)."""
        values.pop("schema_version", None)
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [(k, None if v is None else str(v)) for k, v in values.items()])

    def meta(self) -> dict[str, str]:
        """Returns the meta table as a dict."""
        return dict(self._db.execute("SELECT key, value FROM meta"))

    def log(self, step: int, epoch: float, key: str, value: float) -> None:
        """Buffers one scalar; written by flush(), which runs by itself every flush_every seconds."""
        self._buffer.append((step, epoch, key, value))
        if self._clock() - self._flushed_at >= self.flush_every:
            self.flush()

    def log_many(self, rows: Iterable[tuple[int, float, str, float]]) -> None:
        """Buffers many (step, epoch, key, value) scalars."""
        self._buffer.extend(rows)
        if self._clock() - self._flushed_at >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Writes buffered scalars in one transaction."""
        self._flushed_at = self._clock()
        if self._buffer:
            rows, self._buffer = self._buffer, []
            self._write("INSERT INTO scalars VALUES (?, ?, ?, ?)", rows)

    def scalars(self, key: str) -> list[tuple[int, float, float]]:
        """Returns (step, epoch, value) rows of one key in step order."""
        self.flush()
        return list(self._db.execute("SELECT step, epoch, value FROM scalars WHERE key = ? ORDER BY step, rowid",
                                     (key,)))

    def all_scalars(self) -> dict[str, list[tuple[int, float, float]]]:
        """Returns {key: [(step, epoch, value), ...]} of every scalar, in step order."""
        self.flush()
        out: dict[str, list[tuple[int, float, float]]] = {}
        for step, epoch, key, value in self._db.execute(
                "SELECT step, epoch, key, value FROM scalars ORDER BY key, step, rowid"):
            out.setdefault(key, []).append((step, epoch, float("nan") if value is None else value))
        return out

    def truncate_after(self, step: int) -> None:
        """Deletes everything logged after a step (a resumed run redoes it)."""
        self._buffer = [r for r in self._buffer if r[0] <= step]
        self._db.execute("BEGIN")
        for table in ("scalars", "histograms", "arrays", "findings"):
            self._db.execute(f"DELETE FROM {table} WHERE step > ?", (step,))
        self._db.execute("COMMIT")

    def interpolate_epochs(self, after_step: int, to_step: int, from_epoch: float, to_epoch: float) -> None:
        """Rewrites the epoch of rows logged in steps (after_step, to_step] linearly (a hand loop learns an
        epoch's length only at its end)."""
        self.flush()
        if to_step <= after_step:
            return
        scale = (to_epoch - from_epoch) / (to_step - after_step)
        self._db.execute("BEGIN")
        for table in ("scalars", "histograms", "arrays"):
            self._db.execute(f"UPDATE {table} SET epoch = ? + (step - ?) * ? WHERE step > ? AND step <= ?",
                             (from_epoch, after_step, scale, after_step, to_step))
        self._db.execute("COMMIT")

    def history(self) -> tuple[EpochRecord, ...]:
        """Returns the per-epoch records stored so far (a missing field reads NaN; the epoch stays)."""
        self.flush()
        keys = tuple(f"epoch/{k}" for k in (*EPOCH_KEYS, "metric"))
        rows = self._db.execute("SELECT epoch, key, value FROM scalars WHERE key IN (%s) ORDER BY step, rowid"
                                % ",".join("?" * len(keys)), keys)
        by_epoch: dict[int, dict[str, float]] = {}
        for epoch, key, value in rows:
            by_epoch.setdefault(int(round(epoch)), {})[key.split("/", 1)[1]] = value
        return epoch_records(by_epoch)

    def log_epoch(self, step: int, record: EpochRecord) -> None:
        """Buffers an epoch record as scalars keyed "epoch/<field>"."""
        for k in (*EPOCH_KEYS, "metric"):
            self.log(step, float(record.epoch), f"epoch/{k}", getattr(record, k))

    def add_histograms(self, rows: Iterable[Histogram], *, keep: int = 64) -> None:
        """Stores histogram snapshots; keeps at most `keep` per (layer, kind), thinning every other one."""
        rows = list(rows)
        self._write("INSERT INTO histograms (step, layer, kind, counts, edges, epoch) VALUES (?, ?, ?, ?, ?, ?)",
                    [(h.step, h.layer, h.kind, json.dumps(list(h.counts)), json.dumps(list(h.edges)), h.epoch)
                     for h in rows])
        for layer, kind in {(h.layer, h.kind) for h in rows}:
            self._thin("histograms", "layer = ? AND kind = ?", (layer, kind), keep)

    def add_array(self, snapshot: ArraySnapshot, data: bytes, *, keep: int = 32) -> None:
        """Stores an array snapshot (raw float16 bytes); keeps at most `keep` per name, thinned."""
        self._write("INSERT INTO arrays VALUES (?, ?, ?, ?, ?)",
                    [(snapshot.step, snapshot.epoch, snapshot.name, json.dumps(list(snapshot.shape)), data)])
        self._thin("arrays", "name = ?", (snapshot.name,), keep)

    def _thin(self, table: str, where: str, args: tuple[Any, ...], keep: int) -> None:
        """Deletes every other stored snapshot (never the first or the last) once there are more than keep."""
        rowids = [r[0] for r in self._db.execute(f"SELECT rowid FROM {table} WHERE {where} ORDER BY step", args)]
        if len(rowids) > max(keep, 2):
            self._write(f"DELETE FROM {table} WHERE rowid = ?", [(r,) for r in rowids[1:-1:2]])

    def histograms(self) -> tuple[Histogram, ...]:
        """Returns every stored histogram snapshot in step order."""
        rows = self._db.execute("SELECT step, epoch, layer, kind, counts, edges FROM histograms ORDER BY step, rowid")
        return tuple(Histogram(int(s), float("nan") if e is None else float(e), str(layer), str(kind),
                               tuple(json.loads(c)), tuple(json.loads(ed))) for s, e, layer, kind, c, ed in rows)

    def arrays(self, decode: Callable[[bytes], Sequence[float]]) -> tuple[ArraySnapshot, ...]:
        """Returns every stored array snapshot in step order, its bytes decoded by `decode`."""
        rows = self._db.execute("SELECT step, epoch, name, shape, data FROM arrays ORDER BY step, rowid")
        return tuple(ArraySnapshot(int(s), float("nan") if e is None else float(e), str(n),
                                   tuple(json.loads(shape)), tuple(decode(data))) for s, e, n, shape, data in rows)

    def set_findings(self, findings: Iterable[Mapping[str, Any]]) -> None:
        """Replaces the stored findings (code, severity, message, evidence, advice, epoch, step)."""
        rows = [(f["code"], f["severity"], f["message"], json.dumps(f.get("evidence", {}), default=str),
                 f.get("advice", ""), f.get("epoch"), f.get("step")) for f in findings]
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM findings")
        self._db.executemany("INSERT INTO findings (code, severity, message, evidence, advice, epoch, step) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._db.execute("COMMIT")

    def findings(self) -> list[dict[str, Any]]:
        """Returns the stored findings as plain dicts."""
        rows = self._db.execute("SELECT code, severity, message, evidence, advice, epoch, step FROM findings")
        return [{"code": c, "severity": s, "message": m, "evidence": json.loads(e or "{}"), "advice": a,
                 "epoch": ep, "step": st} for c, s, m, e, a, ep, st in rows]

    def record_checkpoint(self, name: str, epoch: int, sha256: str, size: int) -> None:
        """Records a checkpoint file's sha256 and size (written before the file itself is put in place)."""
        # from this epoch on every checkpoint of the run has a checksum (older ones predate checksums)
        self._write("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)", [(name, epoch, sha256, size, now())],
                    ("INSERT OR IGNORE INTO meta VALUES ('checksums_from_epoch', ?)", [(str(epoch),)]))

    def forget_checkpoints(self, names: Iterable[str]) -> None:
        """Deletes the records of pruned checkpoint files."""
        self._write("DELETE FROM checkpoints WHERE name = ?", [(n,) for n in names])

    def checkpoint_sums(self) -> dict[str, tuple[str, int]]:
        """Returns {file name: (sha256, size)} of every checkpoint recorded."""
        return {n: (s, int(z)) for n, s, z in self._db.execute("SELECT name, sha256, size FROM checkpoints")}

    def close(self) -> None:
        """Flushes and closes the database."""
        self.flush()
        self._db.close()



def recorded_sums(run_dir: str | Path) -> tuple[dict[str, tuple[str, int]], int | None] | None:
    """Returns ({name: (sha256, size)}, the first epoch recorded) from run_dir/run.sqlite, or None without one.

    Opens the database read-only and never creates it (a copied checkpoint may have no run.sqlite beside it).
    """
    path = Path(run_dir) / "run.sqlite"
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute("SELECT name, sha256, size FROM checkpoints").fetchall()
            first = db.execute("SELECT value FROM meta WHERE key = 'checksums_from_epoch'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None  # an older schema (no checksums yet) or an unreadable database: the sidecar files decide
    return {n: (s, int(z)) for n, s, z in rows}, (int(first[0]) if first and first[0] is not None else None)
