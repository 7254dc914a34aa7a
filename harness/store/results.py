"""The results store: SQLite, one file (default ``results/hilbench.sqlite``).

Tables: ``runs`` (what ran, on what, with which versions), ``nodes`` (per run and node: device,
firmware footprint, HELLO), ``inferences`` (per run, node and sample: the device's figures and
code bytes, the golden code, bit-exactness), ``predictions`` (per run and sample: the gateway's
prediction from the device codes, the golden prediction, the label), ``meter_sessions`` (per run,
node and session: the meter that recorded the node, its basis, windows, idle power, energy per
inference, the raw-samples file) and ``energy_windows`` (per session and window: the sample it
belongs to, its time and duration on the meter's clock, gross and net energy). Keys make every
(run, node, sample) row unique and writes use ``INSERT OR IGNORE`` in committed batches, so a
killed run keeps what it finished and a resumed run never duplicates a row.
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, TypedDict

import numpy as np
import pandas as pd

from harness.core.errors import HilbenchError
from harness.core.paths import results_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    experiment_file TEXT,
    experiment_hash TEXT NOT NULL,
    run_key TEXT NOT NULL,          -- what makes two runs the same run (for resuming)
    model_hash TEXT NOT NULL,
    cache_key TEXT,
    dataset TEXT, scheme TEXT, code_bits TEXT, code_values INTEGER, nodes INTEGER,
    samples INTEGER NOT NULL,
    node_device TEXT NOT NULL, gateway_device TEXT NOT NULL,
    emulated INTEGER NOT NULL,
    device_profiles TEXT,           -- JSON: profile name -> profile
    git_commit TEXT, package_versions TEXT,
    started_at REAL NOT NULL, finished_at REAL,
    status TEXT NOT NULL,           -- running | complete | interrupted | failed
    summary TEXT                    -- JSON of the run summary once complete
);
CREATE TABLE IF NOT EXISTS nodes (
    run_id TEXT NOT NULL, node INTEGER NOT NULL, device TEXT NOT NULL, emulated INTEGER NOT NULL,
    board TEXT, flash_bytes INTEGER, ram_bytes INTEGER, stack_bytes INTEGER, macs INTEGER,
    model_hash TEXT, info TEXT,
    PRIMARY KEY (run_id, node)
);
CREATE TABLE IF NOT EXISTS inferences (
    run_id TEXT NOT NULL, node INTEGER NOT NULL, sample INTEGER NOT NULL,
    device TEXT NOT NULL,
    ticks INTEGER,                  -- raw device timer ticks (MCU)
    device_count REAL,              -- what the ticks measure, in device_unit
    device_unit TEXT,               -- instructions | cycles | ns
    latency REAL, latency_unit TEXT, latency_basis TEXT,
    host_rtt_s REAL,
    code BLOB NOT NULL, golden_code BLOB NOT NULL, bitexact INTEGER NOT NULL,
    attempts INTEGER, wire_bytes_sent INTEGER, wire_bytes_received INTEGER,
    PRIMARY KEY (run_id, node, sample)
);
CREATE TABLE IF NOT EXISTS study_points (
    study TEXT NOT NULL, point_key TEXT NOT NULL,
    position INTEGER NOT NULL, label TEXT NOT NULL,
    overrides TEXT NOT NULL,        -- JSON: dotted field -> value
    status TEXT NOT NULL,           -- pending | complete | failed
    reason TEXT,                    -- why a point failed
    row TEXT,                       -- JSON: the point's figures (see harness.study.point_row)
    wall_s REAL, updated_at REAL,
    PRIMARY KEY (study, point_key)
);
CREATE TABLE IF NOT EXISTS meter_sessions (
    run_id TEXT NOT NULL, node INTEGER NOT NULL, session INTEGER NOT NULL,  -- one per meter start
    device TEXT NOT NULL, meter TEXT NOT NULL,
    basis TEXT NOT NULL,            -- "measured: ..." or "simulated meter: ..." (instrument, supply, rate, windows)
    simulated INTEGER NOT NULL, windows_by TEXT NOT NULL,   -- marker | timestamps
    rate_hz REAL, trace_samples INTEGER, windows INTEGER, inferences INTEGER,
    gross_j REAL, net_j REAL,       -- per inference, the session's mean
    idle_w REAL, idle_source TEXT, window_s REAL, method TEXT,
    clock_offset_s REAL, uncertainty_s REAL,
    raw_path TEXT,                  -- the raw samples (.npz), relative to the database's directory
    status TEXT NOT NULL,           -- complete | failed
    error TEXT, sources TEXT,       -- sources: JSON list
    started_at REAL, stopped_at REAL,
    PRIMARY KEY (run_id, node, session)
);
CREATE TABLE IF NOT EXISTS energy_windows (
    run_id TEXT NOT NULL, node INTEGER NOT NULL, session INTEGER NOT NULL, window INTEGER NOT NULL,
    sample INTEGER,                 -- the test sample, when windows and inferences pair up one to one
    start_s REAL, duration_s REAL,  -- on the meter's clock
    gross_j REAL, net_j REAL,
    PRIMARY KEY (run_id, node, session, window)
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL, sample INTEGER NOT NULL, label INTEGER NOT NULL,
    prediction INTEGER NOT NULL, golden_prediction INTEGER NOT NULL,
    gateway TEXT NOT NULL, gateway_ns REAL,
    PRIMARY KEY (run_id, sample)
);
"""



class InferenceRow(TypedDict):
    """One node's answer for one sample, as the run engine stores it (table ``inferences``)."""

    run_id: str
    node: int
    sample: int
    device: str
    ticks: int | None
    device_count: float | None
    device_unit: str | None
    latency: float
    latency_unit: str
    latency_basis: str
    host_rtt_s: float
    code: bytes
    golden_code: bytes
    bitexact: int
    attempts: int
    wire_bytes_sent: int
    wire_bytes_received: int


class PredictionRow(TypedDict):
    """The head's prediction for one sample from the device codes and from the golden codes."""

    run_id: str
    sample: int
    label: int
    prediction: int
    golden_prediction: int
    gateway: str
    gateway_ns: float | None


class MeterSessionRow(TypedDict):
    """One meter's recording of one node over one run session (table ``meter_sessions``)."""

    run_id: str
    node: int
    session: int
    device: str
    meter: str
    basis: str
    simulated: int
    windows_by: str
    rate_hz: float | None
    trace_samples: int | None
    windows: int | None
    inferences: int
    gross_j: float | None
    net_j: float | None
    idle_w: float | None
    idle_source: str | None
    window_s: float | None
    method: str | None
    clock_offset_s: float | None
    uncertainty_s: float | None
    raw_path: str | None
    status: str
    error: str | None
    sources: str
    started_at: float
    stopped_at: float


class EnergyWindowRow(TypedDict):
    """One inference window of a meter session (table ``energy_windows``)."""

    run_id: str
    node: int
    session: int
    window: int
    sample: int | None
    start_s: float | None
    duration_s: float
    gross_j: float
    net_j: float


INFERENCE_COLUMNS = tuple(InferenceRow.__annotations__)
METER_SESSION_COLUMNS = tuple(MeterSessionRow.__annotations__)
ENERGY_WINDOW_COLUMNS = tuple(EnergyWindowRow.__annotations__)
PREDICTION_COLUMNS = tuple(PredictionRow.__annotations__)


def stored_codes(inferences: pd.DataFrame, node: int, code_len: int, bits: int, column: str = "code",
                 samples: list[int] | None = None) -> np.ndarray:
    """One node's codes [samples, code_len] unpacked from stored packed bytes (``code`` from the
    device or ``golden_code``), in sample order, for ``samples`` or every stored sample."""
    from quant_models.packing import unpack_codes

    rows = inferences[inferences.node == node].set_index("sample").sort_index()
    if samples is not None:
        rows = rows.loc[samples]
    packed = np.stack([np.frombuffer(b, np.uint8) for b in rows[column]])
    return unpack_codes(packed, code_len, bits)


def default_db_path() -> Path:
    return results_dir() / "hilbench.sqlite"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    status: str
    samples: int


class ResultsStore:
    """A thin API over the SQLite file; DataFrame readers for analysis."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with closing(self._connect()) as con:
                con.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise HilbenchError(f"{self.path}: not a hilbench results database ({exc})") from exc

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    # -- writing ----------------------------------------------------------------------------

    def create_run(self, **fields) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        row = {"run_id": run_id, "started_at": time.time(), "status": "running", **fields}
        for key in ("device_profiles", "package_versions"):
            if key in row and not isinstance(row[key], str):
                row[key] = json.dumps(row[key])
        cols = ", ".join(row)
        with closing(self._connect()) as con, con:
            con.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        return run_id

    def find_resumable(self, run_key: str) -> RunRecord | None:
        """The newest unfinished run with this key, to continue instead of starting over."""
        with closing(self._connect()) as con:
            row = con.execute("SELECT run_id, status, samples FROM runs WHERE run_key = ? AND status != 'complete' "
                              "ORDER BY started_at DESC LIMIT 1", (run_key,)).fetchone()
        return RunRecord(*row) if row else None

    def set_status(self, run_id: str, status: str, summary: Mapping[str, Any] | None = None) -> None:
        with closing(self._connect()) as con, con:
            con.execute("UPDATE runs SET status = ?, finished_at = ?, summary = COALESCE(?, summary) WHERE run_id = ?",
                        (status, time.time() if status != "running" else None,
                         json.dumps(summary) if summary is not None else None, run_id))

    def put_node(self, run_id: str, node: int, **fields) -> None:
        row = {"run_id": run_id, "node": node, **fields}
        if "info" in row and not isinstance(row["info"], str):
            row["info"] = json.dumps(row["info"])
        cols = ", ".join(row)
        with closing(self._connect()) as con, con:
            con.execute(f"INSERT OR REPLACE INTO nodes ({cols}) VALUES ({', '.join('?' * len(row))})",
                        tuple(row.values()))

    def _insert(self, table: str, columns: tuple[str, ...], rows: Iterable[Mapping[str, Any]]) -> int:
        values = [tuple(r.get(c) for c in columns) for r in rows]
        if not values:
            return 0
        with closing(self._connect()) as con, con:
            cur = con.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
                                  f"VALUES ({', '.join('?' * len(columns))})", values)
            return cur.rowcount

    def add_inferences(self, rows: Iterable[InferenceRow]) -> int:
        """Insert one committed batch; rows already present are ignored (resume-safe)."""
        return self._insert("inferences", INFERENCE_COLUMNS, rows)

    def add_predictions(self, rows: Iterable[PredictionRow]) -> int:
        return self._insert("predictions", PREDICTION_COLUMNS, rows)

    def next_meter_session(self, run_id: str, node: int) -> int:
        """The number of the node's next meter session in the run (0 for the first)."""
        with closing(self._connect()) as con:
            row = con.execute("SELECT MAX(session) FROM meter_sessions WHERE run_id = ? AND node = ?",
                              (run_id, node)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def add_meter_session(self, session: Mapping[str, Any], windows: Iterable[Mapping[str, Any]] = ()) -> None:
        """Store a meter session (the columns of :class:`MeterSessionRow`) and its windows
        (:class:`EnergyWindowRow`) in one transaction."""
        with closing(self._connect()) as con, con:
            con.execute(f"INSERT OR REPLACE INTO meter_sessions ({', '.join(METER_SESSION_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(METER_SESSION_COLUMNS))})",
                        tuple(session[c] for c in METER_SESSION_COLUMNS))
            con.executemany(f"INSERT OR REPLACE INTO energy_windows ({', '.join(ENERGY_WINDOW_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(ENERGY_WINDOW_COLUMNS))})",
                            [tuple(w[c] for c in ENERGY_WINDOW_COLUMNS) for w in windows])

    def put_study_points(self, study: str, points: Iterable[tuple[int, str, str, Mapping[str, Any]]]) -> None:
        """Register a study's points (position, key, label, overrides); known points keep their
        status and figures, so a rerun continues where the last one stopped."""
        with closing(self._connect()) as con, con:
            for position, key, label, overrides in points:
                con.execute("INSERT INTO study_points (study, point_key, position, label, overrides, status, "
                            "updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (study, point_key) DO "
                            "UPDATE SET position = excluded.position, label = excluded.label",
                            (study, key, position, label, json.dumps(overrides), time.time()))

    def set_study_point(self, study: str, key: str, status: str, reason: str | None, row: Mapping[str, Any],
                        wall_s: float | None = None) -> None:
        with closing(self._connect()) as con, con:
            con.execute("UPDATE study_points SET status = ?, reason = ?, row = ?, wall_s = ?, updated_at = ? "
                        "WHERE study = ? AND point_key = ?",
                        (status, reason, json.dumps(row), wall_s, time.time(), study, key))

    def finished_study_points(self, study: str, statuses: tuple[str, ...] = ("complete", "failed")) -> set[str]:
        """Keys of the study's points whose status is one of ``statuses``."""
        with closing(self._connect()) as con:
            rows = con.execute(f"SELECT point_key FROM study_points WHERE study = ? AND status IN "
                               f"({', '.join('?' * len(statuses))})", (study, *statuses)).fetchall()
        return {r[0] for r in rows}

    # -- reading ----------------------------------------------------------------------------

    def study_points(self, study: str | None = None) -> pd.DataFrame:
        """Study points in file order (``row`` and ``overrides`` as JSON text)."""
        if study is None:
            return self._frame("SELECT * FROM study_points ORDER BY study, position")
        return self._frame("SELECT * FROM study_points WHERE study = ? ORDER BY position", (study,))

    def done_samples(self, run_id: str) -> dict[int, set[int]]:
        """Per node, the samples already stored."""
        with closing(self._connect()) as con:
            rows = con.execute("SELECT node, sample FROM inferences WHERE run_id = ?", (run_id,)).fetchall()
        done: dict[int, set[int]] = {}
        for node, sample in rows:
            done.setdefault(node, set()).add(sample)
        return done

    def _frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        with closing(self._connect()) as con:
            return pd.read_sql_query(sql, con, params=params)

    def runs(self) -> pd.DataFrame:
        return self._frame("SELECT * FROM runs ORDER BY started_at")

    def run(self, run_id: str) -> dict:
        df = self._frame("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if df.empty:
            raise HilbenchError(f"{self.path}: no run {run_id!r} (see `hilbench results list`)")
        row = df.iloc[0].to_dict()
        row["summary"] = json.loads(row["summary"]) if row.get("summary") else None
        return row

    def inferences(self, run_id: str | None = None) -> pd.DataFrame:
        if run_id is None:
            return self._frame("SELECT * FROM inferences ORDER BY run_id, sample, node")
        return self._frame("SELECT * FROM inferences WHERE run_id = ? ORDER BY sample, node", (run_id,))

    def predictions(self, run_id: str | None = None) -> pd.DataFrame:
        if run_id is None:
            return self._frame("SELECT * FROM predictions ORDER BY run_id, sample")
        return self._frame("SELECT * FROM predictions WHERE run_id = ? ORDER BY sample", (run_id,))

    def nodes(self, run_id: str) -> pd.DataFrame:
        return self._frame("SELECT * FROM nodes WHERE run_id = ? ORDER BY node", (run_id,))

    def meter_sessions(self, run_id: str) -> pd.DataFrame:
        """Every meter session of the run, by node and session."""
        return self._frame("SELECT * FROM meter_sessions WHERE run_id = ? ORDER BY node, session", (run_id,))

    def energy_windows(self, run_id: str) -> pd.DataFrame:
        """Every metered inference window of the run, by node, session and window."""
        return self._frame("SELECT * FROM energy_windows WHERE run_id = ? ORDER BY node, session, window", (run_id,))

    def raw_dir(self, run_id: str) -> Path:
        """Where a run's raw meter samples go: ``meter/<run_id>/`` next to the database."""
        return self.path.parent / "meter" / run_id

    def layers(self, run_id: str) -> pd.DataFrame:
        """The per-layer profile of each node of ``run_id`` (nodes that report one): node, device,
        stage, MACs, count (instructions emulated, cycles on a board), unit, per MAC."""
        rows = []
        for _, n in self.nodes(run_id).iterrows():
            info = json.loads(n["info"]) if n["info"] else {}
            rows += [{"node": int(n.node), "device": n.device, **layer} for layer in info.get("layers") or []]
        return pd.DataFrame(rows, columns=["node", "device", "stage", "macs", "count", "unit", "per_mac"])
