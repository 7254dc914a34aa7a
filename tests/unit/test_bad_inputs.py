"""One corpus of bad inputs: mistakes users make with device profiles, experiment files, study
files and the command line.

Each case writes its files into its own directory (profiles into a directory named by
``$HILBENCH_PROFILE_DIRS``), runs the real ``hilbench`` in a subprocess with its own model cache
and results database, and must: exit 2, print no traceback, name the file and field (or the
device and its profile), say what is wrong and what to do, finish within seconds, train nothing
(the model cache stays empty) and leave no run or study point marked complete.

The cases run once per module, in parallel threads (each is a subprocess, so this test process
never imports torch); each case is then its own test.
"""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECONDS = 15.0  # per case, on a loaded 2-core machine: a guard that nothing trains, not a benchmark
PARALLEL = 2  # the cases are CPU-bound: one per core keeps each case's time honest

# Placeholders, replaced in a case's files, arguments and expected text.
TMP, DB, PORT = "<tmp>", "<tmp>/results.sqlite", "<closed-port>"
PROFILE = f"{TMP}/profiles/my-board.yaml"
EXP = f"{TMP}/exp.yaml"
STUDY = f"{TMP}/study.yaml"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)  # relative path in the case's directory -> text
    _: KW_ONLY
    expect: tuple[str, ...]  # substrings of stderr: where, what is wrong, what to do


# ---- building blocks -------------------------------------------------------------------------

def run_on(device: str, *extra: str) -> tuple[str, ...]:
    return ("run", "experiments/smoke.yaml", "--nodes-device", device, "--samples", "5", "--db", DB, *extra)


def run_exp() -> tuple[str, ...]:
    return ("run", EXP, "--samples", "5", "--db", DB)


def study() -> tuple[str, ...]:
    return ("study", STUDY, "--db", DB)


def emulated_mcu(extra: str = "", **replace: str) -> dict[str, str]:
    text = "name: my-board\nkind: mcu\nemulated: true\nboard: netduinoplus2\ndeploy: {method: qemu}\n"
    for old, new in replace.items():
        text = text.replace(old, new)
    return {"profiles/my-board.yaml": text + extra}


def real_mcu(url: str) -> dict[str, str]:
    return {"profiles/my-board.yaml": "name: my-board\nkind: mcu\nemulated: false\nboard: nucleo-f446re\n"
                                      f"transport: {{url: '{url}'}}\ndeploy: {{method: none}}\n"}


def real_pi(ssh: str) -> dict[str, str]:
    return {"profiles/my-pi.yaml": "name: my-pi\nkind: linux\nemulated: false\ndeploy: {method: ssh}\n"
                                   f"ssh: {{host: 127.0.0.1, user: pi, {ssh}}}\n"}


def experiment(**fields: str | None) -> str:
    """An experiment file: a small valid one, with ``fields`` (YAML text) replaced, added or
    (None) removed."""
    base = {"name": "bad", "dataset": "mnist", "partition": "quadrants", "code": "{values: 64, bits: 4}",
            "training": "{epochs: 1, train_samples: 200}"}
    return "".join(f"{key}: {value}\n" for key, value in (base | fields).items() if value is not None)


def study_file(product: str, extra: str = "", **base: str | None) -> dict[str, str]:
    """A study of ``exp.yaml`` (``base``: its fields, as in :func:`experiment`) varying ``product``
    (YAML lines under ``matrix.product``)."""
    return {"exp.yaml": experiment(**base),
            "study.yaml": f"name: s\nbase: exp.yaml\nmatrix:\n  product:\n{product}{extra}"}


DEEP_ENCODER = "{layers: [{conv: {channels: 8}}, {maxpool: 2}, {conv: {channels: 8}}, {maxpool: 2}, {maxpool: 2}]}"

# ---- the corpus ------------------------------------------------------------------------------

CASES = [
    # device profiles
    Case("profile-unknown-field", run_on("my-board"), emulated_mcu("transport: {reply_timeout: 5}\n"),
         expect=(f"{PROFILE}: field 'transport.reply_timeout'", "unknown field", "did you mean 'reply_timeout_s'")),
    Case("profile-number-as-text", run_on("my-board"), emulated_mcu("clock_hz: 168MHz\n"),
         expect=(f"{PROFILE}: field 'clock_hz'", "valid integer", "got '168MHz'")),
    Case("profile-transport-as-string", run_on("my-board"),
         {"profiles/my-board.yaml": real_mcu("x")["profiles/my-board.yaml"].replace("{url: 'x'}", "/dev/ttyACM0")},
         expect=(f"{PROFILE}: field 'transport'", "got '/dev/ttyACM0'", "a mapping with the fields url, ")),
    Case("profile-unknown-board", run_on("my-board"), emulated_mcu(**{"netduinoplus2": "stm32f4discovery"}),
         expect=(f"{PROFILE}: field 'board'", "unknown board 'stm32f4discovery'", "known: ", "netduinoplus2")),
    Case("profile-emulated-board-flashed", run_on("my-board"),
         emulated_mcu(**{"{method: qemu}": "{method: command, command: [pyocd, flash, '{elf}']}"}),
         expect=(f"{PROFILE}: field 'deploy.method'", "an emulated mcu deploys with method 'qemu'")),
    Case("profile-missing-key-file", run_on("my-pi"), real_pi(f"key: {TMP}/no-such-key"),
         expect=(f"{TMP}/profiles/my-pi.yaml: field 'ssh.key'", "device 'my-pi'", f"{TMP}/no-such-key does not exist",
                 "ssh-keygen")),
    Case("profile-missing-known-hosts", ("run", "experiments/smoke.yaml", "--gateway-device", "my-pi", "--db", DB),
         real_pi(f"key: {TMP}/id_ed25519, known_hosts: {TMP}/known_hosts") | {"id_ed25519": "not checked\n"},
         expect=(f"{TMP}/profiles/my-pi.yaml: field 'ssh.known_hosts'", "device 'my-pi'",
                 f"{TMP}/known_hosts does not exist", "ssh-keyscan")),
    Case("profile-serial-port-closed", run_on("my-board"), real_mcu(f"socket://127.0.0.1:{PORT}"),
         expect=(f"{PROFILE}: field 'transport.url'", "device 'my-board' cannot be reached",
                 f"nothing listens on 127.0.0.1:{PORT}", "correct the port")),
    Case("profile-serial-node-missing", run_on("my-board"), real_mcu("/dev/ttyNOPE"),
         expect=(f"{PROFILE}: field 'transport.url'", "device 'my-board' cannot be reached",
                 "/dev/ttyNOPE does not exist", "plugged in", "/dev/serial/by-id")),
    Case("profile-serial-unknown-scheme", run_on("my-board"), real_mcu("tcp://127.0.0.1:4000"),
         expect=(f"{PROFILE}: field 'transport.url'", "no transport for URL 'tcp://127.0.0.1:4000'", "socket")),
    Case("profile-unknown-radio", run_on("my-board"), emulated_mcu("radio: lora-us915\n"),
         expect=(f"{PROFILE}: field 'radio'", "unknown radio 'lora-us915'", "known: ", "lora-eu868-sf7")),
    Case("profile-unknown-meter", run_on("my-board"), emulated_mcu("meter: ppk3\n"),
         expect=(f"{PROFILE}: field 'meter'", "unknown meter 'ppk3'", "known: ", "ppk2")),
    # experiment files
    Case("exp-c-not-divisible", run_exp(), {"exp.yaml": experiment(code="{values: 30, bits: 4}")},
         expect=(f"{EXP}: field 'code.values'", "C = 30 is not divisible by the 4 nodes", "multiple of 4")),
    Case("exp-unsupported-q", run_exp(), {"exp.yaml": experiment(code="{values: 64, bits: 5}")},
         expect=(f"{EXP}: field 'code.bits'", "q = 5 is not supported", "use one of [1, 2, 3, 4, 8]")),
    Case("exp-unknown-dataset", run_exp(), {"exp.yaml": experiment(dataset="emnist")},
         expect=(f"{EXP}: field 'dataset'", "unknown dataset 'emnist'", "known: ", "fashion-mnist")),
    Case("exp-idx-directory-missing", run_exp(), {"exp.yaml": experiment(dataset=f"idx:{TMP}/no-such-dir")},
         expect=(f"{EXP}: field 'dataset'", f"{TMP}/no-such-dir is not a directory")),
    Case("exp-partition-finer-than-encoder", run_exp(),
         {"exp.yaml": experiment(partition="grid:7x7", encoder=DEEP_ENCODER, code="{values: 98, bits: 4}")},
         expect=(f"{EXP}: field 'encoder.layers'", "partition 'grid:7x7'", "4x4 views", "to nothing",
                 "coarser partition")),
    Case("exp-partition-finer-than-encoder-train", ("train", EXP, "--cache-dir", f"{TMP}/models"),
         {"exp.yaml": experiment(partition="strips:28:rows", encoder="{layers: [{maxpool: 2}]}",
                                 code="{values: 28, bits: 4}")},
         expect=(f"{EXP}: field 'encoder.layers'", "1x28 views", "to nothing", "coarser partition")),
    Case("exp-partition-does-not-divide", run_exp(), {"exp.yaml": experiment(partition="grid:3x3")},
         expect=(f"{EXP}: field 'partition'", "a 3x3 grid does not divide 28x28 images evenly")),
    Case("exp-malformed-yaml", run_exp(), {"exp.yaml": "name: bad\ncode:\n  values: 64\n bits: 4\ndataset: mnist\n"},
         expect=(f"{EXP}: malformed YAML at line 4",)),
    Case("exp-unknown-field", run_exp(), {"exp.yaml": experiment(epochs="20")},
         expect=(f"{EXP}: field 'epochs'", "unknown field", "training")),
    Case("exp-missing-code", run_exp(), {"exp.yaml": experiment(code=None)},
         expect=(f"{EXP}: field 'code'", "missing", "add it")),
    Case("exp-unknown-node-device", run_exp(), {"exp.yaml": experiment(devices="{nodes: stm32f405-qmeu}")},
         expect=(f"{EXP}: field 'devices.nodes'", "unknown device 'stm32f405-qmeu'", "stm32f405-qemu")),
    Case("exp-file-missing", ("run", f"{TMP}/no-such.yaml", "--db", DB),
         expect=(f"{TMP}/no-such.yaml: cannot read an experiment file", "No such file or directory")),
    Case("exp-is-a-study-file", run_exp(), study_file("    code.bits: [2, 4]\n") | {"exp.yaml": "name: s\nbase: x.yaml\n"},
         expect=(f"{EXP}", "is a study file", "hilbench study")),
    # study files
    Case("study-point-unsupported-q", study(), study_file("    code.bits: [4, 5]\n"),
         expect=(f"{STUDY} point code.bits=5: field 'code.bits'", "q = 5 is not supported", "use one of")),
    Case("study-point-c-not-divisible", study(), study_file("    code.values: [64, 30]\n"),
         expect=(f"{STUDY} point code.values=30: field 'code.values'", "not divisible", "multiple of 4")),
    Case("study-point-partition-finer-than-encoder", study(),
         study_file("    encoder.layers: [[{maxpool: 2}], [{maxpool: 2}, {maxpool: 2}, {maxpool: 2}]]\n",
                    partition="'grid:4x4'"),
         expect=(f"{STUDY} point encoder.layers=", "field 'encoder.layers': layer 2", "7x7 views", "to nothing")),
    Case("study-point-unknown-dataset", study(), study_file("    dataset: [mnist, emnist]\n"),
         expect=(f"{STUDY} point dataset=emnist: field 'dataset'", "unknown dataset 'emnist'", "known: ")),
    Case("study-base-missing", study(), {"study.yaml": "name: s\nbase: no-such.yaml\n"},
         expect=(f"{STUDY}: field 'base'", f"{TMP}/no-such.yaml", "No such file or directory")),
    Case("study-unknown-field", study(), study_file("    code.bits: [2, 4]\n") | {
         "study.yaml": "name: s\nbase: exp.yaml\nmatrx: {product: {code.bits: [2, 4]}}\n"},
         expect=(f"{STUDY}: field 'matrx'", "unknown field", "did you mean 'matrix'")),
    Case("study-unknown-nodes-device", study(), study_file("    code.bits: [2, 4]\n", "run: {nodes_device: nucleo}\n"),
         expect=(f"{STUDY}: field 'run.nodes_device'", "unknown device 'nucleo'", "nucleo-f446re")),
    Case("study-is-an-experiment-file", ("study", "experiments/smoke.yaml", "--db", DB),
         expect=("experiments/smoke.yaml", "is an experiment file", "hilbench run")),
    # the command line
    Case("cli-run-without-experiment", ("run", "--db", DB),
         expect=("usage: hilbench run", "the following arguments are required: experiment")),
    Case("cli-samples-zero", run_on("stm32f405-qemu", "--samples", "0"),
         expect=("--samples", "must be a positive integer", "got '0'")),
    Case("cli-samples-not-a-number", run_on("stm32f405-qemu", "--samples", "ten"),
         expect=("--samples", "must be a positive integer", "got 'ten'")),
    Case("cli-unknown-command", ("trian", "experiments/smoke.yaml"), expect=("invalid choice: 'trian'", "train")),
    Case("cli-unknown-gateway", ("run", "experiments/smoke.yaml", "--gateway-device", "rpi5", "--db", DB),
         expect=("--gateway-device: unknown device 'rpi5'", "known: ", "pi-loopback")),
    Case("cli-db-inside-a-file", ("run", "experiments/smoke.yaml", "--samples", "5", "--db", f"{TMP}/exp.yaml/r.sqlite"),
         {"exp.yaml": experiment()},
         expect=(f"{TMP}/exp.yaml/r.sqlite", "cannot open the results database", "--db")),
    Case("cli-results-show-unknown-run", ("results", "show", "no-such-run", "--db", DB),
         expect=(f"{DB}: no run 'no-such-run'", "hilbench results list")),
    Case("cli-study-export-without-csv", ("study", "export", "experiments/studies/smoke.yaml", "--db", DB),
         expect=("hilbench study export needs --csv PATH",)),
    Case("cli-study-workers-zero", ("study", "experiments/studies/smoke.yaml", "--workers", "0", "--db", DB),
         expect=("--workers", "must be a positive integer", "got '0'")),
    Case("cli-devices-check-serial-port-closed", ("devices", "check", "my-board"), real_mcu(f"socket://127.0.0.1:{PORT}"),
         expect=(f"{PROFILE}: field 'transport.url'", f"nothing listens on 127.0.0.1:{PORT}")),
]


# ---- running them ----------------------------------------------------------------------------

@dataclass
class Outcome:
    returncode: int
    stderr: str
    seconds: float
    directory: Path
    port: int


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(case: Case, directory: Path, port: int) -> Outcome:
    def fill(text: str) -> str:
        return text.replace(TMP, str(directory)).replace(PORT, str(port))

    (directory / "profiles").mkdir(parents=True)
    for name, text in case.files.items():
        (directory / name).write_text(fill(text))
    env = {**os.environ, "HILBENCH_PROFILE_DIRS": str(directory / "profiles"),
           "HILBENCH_MODEL_CACHE": str(directory / "models"), "COLUMNS": "200"}
    started = time.monotonic()
    # Its own session, so a case that hangs or starts training is stopped with all it started.
    with subprocess.Popen([sys.executable, "-m", "harness.cli", *map(fill, case.args)], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=2 * SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stderr = proc.communicate()[1] + f"\n(stopped after {2 * SECONDS:g} s)"
    return Outcome(proc.returncode, stderr, time.monotonic() - started, directory, port)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    from quant_models.datasets import load_dataset  # numpy only, no torch

    load_dataset("mnist")  # into the session's cache once, not by every case at the same time
    root = tmp_path_factory.mktemp("bad-inputs")
    port = closed_port()
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {case.id: pool.submit(run_case, case, root / case.id, port) for case in CASES}
        return {name: future.result() for name, future in futures.items()}


def complete_rows(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    with closing(sqlite3.connect(db)) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return [row for table in ("runs", "study_points") if table in tables
                for row in con.execute(f"SELECT * FROM {table} WHERE status = 'complete'")]


def test_the_corpus_is_large_and_covers_every_kind_of_input():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids) >= 30
    for kind in ("profile-", "exp-", "study-", "cli-"):
        assert sum(i.startswith(kind) for i in ids) >= 5, kind


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_fails_fast_and_clearly(case: Case, outcomes: dict[str, Outcome]):
    out = outcomes[case.id]
    where = f"{case.id}: hilbench {' '.join(case.args)}\nstderr:\n{out.stderr}"
    assert out.returncode == 2, where
    assert "Traceback" not in out.stderr, where
    for text in case.expect:
        wanted = text.replace(TMP, str(out.directory)).replace(PORT, str(out.port))
        assert wanted in out.stderr, f"expected {wanted!r}\n{where}"
    assert out.seconds < SECONDS, f"took {out.seconds:.1f} s\n{where}"
    models = out.directory / "models"
    assert not models.exists() or not any(models.iterdir()), f"something was trained\n{where}"
    assert complete_rows(out.directory / "results.sqlite") == [], where


def test_a_link_that_fails_at_connect_says_what_is_wrong_and_what_to_do():
    """The plan catches a closed port first; a port that closes between plan and connect still
    gets more than the OS's 'Connection refused'."""
    from harness.core.errors import DeviceError
    from harness.transports.serial import SerialTransport

    url = f"socket://127.0.0.1:{closed_port()}"
    with pytest.raises(DeviceError, match=rf"cannot open serial link {url}: nothing listens on 127.0.0.1:\d+ "
                                          r"\(connection refused\): start the serial server"):
        SerialTransport(url).open()
    with pytest.raises(DeviceError, match=r"/dev/ttyNOPE does not exist: is the board plugged in"):
        SerialTransport("/dev/ttyNOPE").open()
