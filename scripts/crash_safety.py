#!/usr/bin/env python
"""Crash-safety record: SIGKILL `hilbench run` and `hilbench study` at N random moments each
(seeded), rerunning after every kill, then once to completion; checks that every row is there
exactly once, PRAGMA integrity_check is ok, and no emulator or sshd is left behind.
Writes results/reference/crash-safety.md. Reproduce with:
    .venv/bin/python scripts/crash_safety.py [--kills 20] [--seed 0] [--only run|study]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the kill loop lives with the CI test that runs it with fewer kills

from tests.crash_safety import KillReport, kill_at_random_moments  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("run", "study"), help="one loop instead of both")
    parser.add_argument("--out", type=Path, default=ROOT / "results/reference/crash-safety.md")
    args = parser.parse_args()
    loops = {
        "run": (["run", "experiments/smoke.yaml", "--samples", "100"], "inferences",
                ("run_id", "node", "sample"), 400, (0.5, 15.0)),
        "study": (["study", "experiments/studies/smoke.yaml"],
                  "(SELECT * FROM study_points WHERE status = 'complete')", ("study", "point_key"), 5, (1.0, 40.0)),
    }
    reports: list[KillReport] = []
    with tempfile.TemporaryDirectory() as tmp:
        for offset, (name, (command, table, key, expected, window)) in enumerate(loops.items()):
            if args.only not in (None, name):
                continue
            reports.append(kill_at_random_moments(
                command, Path(tmp) / f"{name}.sqlite", table, key, expected_rows=expected, kills=args.kills,
                seed=args.seed + offset, window_s=window))
            print(reports[-1], flush=True)
    lines = ["# Crash safety: SIGKILL at random moments, rerun, check", "",
             "Reproduce: `.venv/bin/python scripts/crash_safety.py --kills "
             f"{args.kills} --seed {args.seed}{' --only ' + args.only if args.only else ''}`.",
             "Each cycle starts the command on a fresh database, kills it (SIGKILL to its process group) at a "
             "moment drawn uniformly from the window, and reruns it to completion; rows and integrity are "
             "checked per cycle and summed. A command that ended before its moment is not counted as a kill. "
             "Orphans: emulator, qemu-user or sshd processes left after all cycles. Counted, not timed.", "",
             "| command | kills | ended before their moment | rows, all cycles (expected) | distinct | integrity_check "
             "| orphaned emulators | final exit | wall |", "|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        lines.append(f"| `{r.command}` | {r.kills} | {r.finished_before_kill} | {r.rows} ({r.expected_rows}) | "
                     f"{r.distinct_rows} | {r.integrity} | {len(r.orphans)} | {r.final_returncode} | "
                     f"{r.wall_s / 60:.1f} min |")
    lines += ["", "Kill moments (s after start): " + "; ".join(
        f"{r.command.split()[1]}: {', '.join(map(str, r.moments_s))}" for r in reports)]
    args.out.write_text("\n".join(lines) + "\n")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
