"""SIGKILL a hilbench command at random moments, rerun it each time, and check what a killed run
must never do: lose or duplicate a row, damage the database, or leave emulators behind.

Shared by tests/emulated/test_crash_safety.py (a few kills in CI) and scripts/crash_safety.py
(the recorded run with >= 20 kills per command).
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

EMULATOR_PROCESSES = ("qemu-system-arm", "qemu-system-aarch64", "qemu-aarch64", "sshd")


@dataclass
class KillReport:
    command: str
    kills: int = 0  # invocations killed while running
    finished_before_kill: int = 0  # invocations that ended before their moment came
    moments_s: list[float] = field(default_factory=list)
    final_returncode: int | None = None
    final_stderr: str = ""
    rows: int = 0
    distinct_rows: int = 0
    expected_rows: int = 0
    integrity: str = ""
    orphans: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.final_returncode == 0 and self.rows == self.distinct_rows == self.expected_rows
                and self.integrity == "ok" and not self.orphans)


def _processes(names: tuple[str, ...]) -> dict[int, str]:
    found = {}
    for name in names:
        out = subprocess.run(["pgrep", "-a", "-x", name], capture_output=True, text=True).stdout
        for line in out.splitlines():
            pid, _, cmdline = line.partition(" ")
            found[int(pid)] = cmdline
    return found


def _check_rows(report: KillReport, db: Path, table: str, key_columns: tuple[str, ...], expected_rows: int) -> None:
    with sqlite3.connect(db) as con:
        keys = ", ".join(key_columns)
        rows = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        distinct = con.execute(f"SELECT COUNT(*) FROM (SELECT DISTINCT {keys} FROM {table})").fetchone()[0]
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    report.rows += rows
    report.distinct_rows += distinct
    report.expected_rows += expected_rows
    if integrity != "ok" or not report.integrity:
        report.integrity = integrity


def kill_at_random_moments(args: list[str], db: Path, table: str, key_columns: tuple[str, ...],
                           expected_rows: int, kills: int, seed: int, window_s: tuple[float, float],
                           env: dict[str, str] | None = None, timeout_s: float = 900) -> KillReport:
    """``kills`` cycles, each on a fresh database (``db`` numbered): run ``hilbench ARGS --db DB``,
    SIGKILL its whole process group at a moment drawn from ``window_s``, then rerun it to
    completion. Rows of ``table`` must be unique by ``key_columns`` and number ``expected_rows``
    per cycle. A command that ends before its moment does not count as a kill; cycles go on
    until ``kills`` kills (at most ``2 * kills`` cycles)."""
    rng = random.Random(seed)
    report = KillReport(" ".join(["hilbench", *args]))
    before = set(_processes(EMULATOR_PROCESSES))
    started = time.monotonic()
    environ = {**os.environ, **(env or {})}
    for cycle in range(2 * kills):
        if report.kills >= kills:
            break
        cycle_db = db.with_name(f"{db.stem}-{cycle}{db.suffix}")
        command = [sys.executable, "-m", "harness.cli", *args, "--db", str(cycle_db)]
        moment = rng.uniform(*window_s)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=environ)
        try:
            proc.wait(timeout=moment)
            report.finished_before_kill += 1
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            report.kills += 1
            report.moments_s.append(round(moment, 2))
        final = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=environ)
        if final.returncode != 0:
            report.final_returncode = final.returncode
            report.final_stderr = final.stderr[-1500:]
            break
        report.final_returncode = 0
        _check_rows(report, cycle_db, table, key_columns, expected_rows)
    report.wall_s = time.monotonic() - started
    time.sleep(0.5)  # emulators of a killed group are reaped by init a moment later
    report.orphans = [f"{pid} {cmd}" for pid, cmd in _processes(EMULATOR_PROCESSES).items() if pid not in before]
    return report
