"""Host side of a Linux device (Raspberry Pi or stand-in): deploy a model, run it in batches.

Deploy: make sure the device has a python with onnxruntime and numpy
(:mod:`harness.targets.linux.runner_env`, unless the device brings one), upload the runner
(``devices/runner/hil_runner.py``, and ``hil_int_lstm.py`` next to it for an LSTM node) and the
model files with SFTP under content-addressed names, and start the runner once. Every batch then
goes over that one long-lived SSH session: the device times its inferences with its monotonic
clock (``time.perf_counter_ns``; one view at a time, or a whole batch in one call where its
self-check allowed that, see :attr:`EncodeResult.timed_together`), the host times each batch's
round trip separately.

Two roles: a *node* runs its encoder and returns integer codes (the host packs them with
:func:`quant_models.packing.pack_codes`, as a node would before radioing them); the *gateway*
runs the head on all nodes' codes and returns logits. A node's model is ONNX (``kind="onnx"``:
uint8 views in; the runner converts inputs and outputs exactly as the harness does,
``pixel / 256`` in, ``round(value / 2**code_exponent)`` out) or an integer LSTM
(``kind="int-lstm"``: int8 windows in, run in numpy on the device because onnxruntime cannot
run a quantized LSTM), so a Linux node's codes are comparable bit for bit with the golden model's.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal, NamedTuple

import numpy as np

from devices.runner import hil_runner as wire
from harness.core.errors import DeviceError, ProtocolError
from harness.core.paths import INT_LSTM_RUNNER_SOURCE, RUNNER_SOURCE
from harness.targets.linux.runner_env import RunnerEnvSpec, ensure_runner_env
from harness.targets.linux.runner_files import ModelKind
from harness.transports.ssh import RemoteProcess, SshConnection

Role = Literal["node", "gateway"]
RUNNER_FILES: dict[ModelKind, tuple[Path, ...]] = {"onnx": (RUNNER_SOURCE,),
                                                   "int-lstm": (RUNNER_SOURCE, INT_LSTM_RUNNER_SOURCE)}
"""The device code a model kind needs, deployed side by side (the runner imports hil_int_lstm)."""
DEFAULT_BATCH_SIZE = 256
IN_FLIGHT = 3  # requests sent ahead of their replies
STORED_REQUEST_BATCHES = 8
"""Batches per INFER_STORED request: the runner answers them with one RESULT, so the device pays
one read and one write, and the link one round of packets, for eight batches instead of each."""


if TYPE_CHECKING:
    from harness.transports.faults import FaultProxy


class EncodeResult(NamedTuple):
    """A node's answer for a set of views."""

    codes: np.ndarray  # uint8 [B, k]: integer codes, in order
    device_ns: np.ndarray  # int64 [B]: each inference on the device's monotonic clock
    round_trip_s: np.ndarray  # float64 [requests]: host wall time per request (encode: a batch), send to reply
    timed_together: np.ndarray  # int64 [B]: views that shared the timing: 1 = its own; n = its batch, ns = time / n

    @property
    def timing(self) -> str:
        """How ``device_ns`` was measured, in words."""
        return timing_description(self.timed_together)

    def packed(self, bits: int) -> np.ndarray:
        """The bytes the node transmits per view (see :mod:`quant_models.packing`)."""
        from quant_models.packing import pack_codes

        return pack_codes(self.codes, bits)


class ClassifyResult(NamedTuple):
    """The gateway's answer for a set of code vectors."""

    logits: np.ndarray  # float32 [B, classes]
    device_ns: np.ndarray  # int64 [B]
    round_trip_s: np.ndarray  # float64 [batches]
    timed_together: np.ndarray  # int64 [B], as EncodeResult's

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


class _Reply(NamedTuple):
    outputs: np.ndarray
    device_ns: np.ndarray
    timed_together: np.ndarray
    round_trip_s: float


class _Batches(NamedTuple):
    outputs: np.ndarray
    device_ns: np.ndarray
    timed_together: np.ndarray
    round_trip_s: np.ndarray


def timing_description(timed_together: np.ndarray) -> str:
    """What per-inference device times are, given how many views shared each timed call."""
    shared = np.asarray(timed_together)
    if not shared.size or (shared == 1).all():
        return wire.PER_VIEW_TIMING
    sizes = sorted({int(n) for n in np.unique(shared)})
    return f"{wire.BATCH_TIMING} (timed batches of {', '.join(map(str, sizes))} views)"


@dataclass(frozen=True)
class DeviceInfo:
    """What the device is and what the runner used; ``timing_basis`` labels its latencies."""

    device: str
    cpu_model: str
    governor: str
    peak_rss_bytes: int
    machine: str
    python: str
    onnxruntime: str
    numpy: str
    emulated: bool
    timing_basis: str
    model_load_ns: int
    inferences: int
    cpu_ns: int  # the runner process's CPU time so far (user + system, all its threads)


class LinuxTarget:
    """One model on one Linux device over SSH, served by one long-lived runner process."""

    def __init__(
        self,
        connection: SshConnection,
        model_path: Path,
        role: Role,
        *,
        python: str | None = None,
        env: RunnerEnvSpec | None = None,
        workdir: str = "hilbench",
        kind: ModelKind = "onnx",
        code_exponent: int | None = None,
        view_shape: tuple[int, int] | None = None,
        exact_model_path: Path | None = None,
        check_path: Path | None = None,
        emulated: bool = False,
        timing_basis: str = "measured on the device (time.perf_counter_ns around each inference)",
        batch_size: int = DEFAULT_BATCH_SIZE,
        startup_timeout_s: float = 120.0,
        reply_timeout_s: float = 120.0,
        threads: int = 1,
    ) -> None:
        """``python``: a device interpreter that already has onnxruntime and numpy (None:
        provision a venv as ``env`` says). ``workdir``: device directory for the runner and models
        (relative to the login user's home, or absolute). ``kind``: "onnx", or "int-lstm" for an
        LSTM node's integer model (``model_path``: the export's ``nodeI.int.json``).
        ``code_exponent``: required for an ONNX node (the manifest's value). ``view_shape``: if
        given, views (an LSTM's windows: rows, steps) are checked against it. ``check_path``
        (node role, required): the export's check vectors, which the runner's self-check encodes
        before it serves; ``exact_model_path``: the export's exact float32 lowering, the runner's
        first choice (see devices/runner/hil_runner.py)."""
        if role not in ("node", "gateway"):
            raise DeviceError(f"unknown role {role!r}: a Linux device is a 'node' or the 'gateway'")
        if kind not in RUNNER_FILES or (kind == "int-lstm" and role != "node"):
            raise DeviceError(f"unknown model kind {kind!r} for the {role} role: 'onnx', or 'int-lstm' for a node")
        if role == "node" and kind == "onnx" and code_exponent is None:
            raise DeviceError("the node role needs code_exponent (the manifest's 'code_exponent' of the node)")
        if role == "node" and check_path is None:
            raise DeviceError("the node role needs the export's check vectors (the manifest's 'check_vectors'): "
                              "without them the runner cannot prove its configuration exact")
        if batch_size < 1:
            raise DeviceError(f"batch_size must be >= 1, not {batch_size}")
        self.connection = connection
        self.fault_proxy: FaultProxy | None = None  # set by the deployer under --link-faults
        self.model_path = Path(model_path)
        self.exact_model_path = Path(exact_model_path) if exact_model_path is not None else None
        self.check_path = Path(check_path) if check_path is not None else None
        self.role: Role = role
        self.kind: ModelKind = kind
        self.python = python
        self.env = env or RunnerEnvSpec()
        self.workdir = workdir.rstrip("/") or "/"
        self.code_exponent = code_exponent
        self.view_shape = tuple(view_shape) if view_shape is not None else None
        self.emulated = emulated
        self.timing_basis = timing_basis
        self.batch_size = batch_size
        self.startup_timeout_s = startup_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.threads = threads
        self._process: RemoteProcess | None = None
        self._hello: dict | None = None
        self._stored: int | None = None  # views kept on the device by store()

    @property
    def name(self) -> str:
        return self.connection.endpoint.device

    @property
    def where(self) -> str:
        return self.connection.endpoint.where

    # -- deploy ------------------------------------------------------------------------------

    def deploy(self) -> dict:
        """Provision python if needed, upload runner and model, start the runner; its HELLO."""
        if not self.model_path.is_file():
            raise DeviceError(f"{self.where}: model {self.model_path} does not exist")
        python = self.python or ensure_runner_env(self.connection, self.env)
        runner_remote = self._upload_runner()
        model_remote = self._upload_content_addressed(self.model_path, "models", "model")
        argv = [python, runner_remote, "--model", model_remote, "--kind", self.kind, "--role", self.role,
                "--threads", str(self.threads)]
        if self.role == "node":
            if self.code_exponent is not None:
                argv += ["--code-exponent", str(self.code_exponent)]
            if self.exact_model_path is not None:
                argv += ["--exact-model", self._upload_content_addressed(self.exact_model_path, "models", "exact")]
            if self.check_path is not None:
                argv += ["--check", self._upload_content_addressed(self.check_path, "models", "check")]
        self._process, self._stored = self.connection.start_process(argv), None
        try:
            self._hello = self._read_hello()
        except BaseException:
            self.close()
            raise
        return self._hello

    def _upload_runner(self) -> str:
        """Upload the device code this model kind needs into WORKDIR/runner/<digest of all the
        runner's sources>/ (their own names, so the runner finds hil_int_lstm next to it); the
        remote path of hil_runner.py."""
        digest = hashlib.sha256(b"".join(hashlib.sha256(p.read_bytes()).digest()
                                         for p in RUNNER_FILES["int-lstm"])).hexdigest()[:16]
        directory = f"{self.workdir}/runner/{digest}"
        for source in RUNNER_FILES[self.kind]:
            remote = f"{directory}/{source.name}"
            if not self.connection.exists(remote):
                self.connection.upload(source, remote)
        return f"{directory}/{RUNNER_SOURCE.name}"

    def _upload_content_addressed(self, local: Path, subdir: str, stem: str) -> str:
        """Upload ``local`` as WORKDIR/SUBDIR/STEM-<sha256 prefix><suffix> unless already there:
        several targets can share a device without overwriting each other's files."""
        digest = hashlib.sha256(local.read_bytes()).hexdigest()[:16]
        remote = f"{self.workdir}/{subdir}/{stem}-{digest}{local.suffix}"
        if not self.connection.exists(remote):
            self.connection.upload(local, remote)
        return remote

    def _read_hello(self) -> dict:
        assert self._process is not None
        kind, payload = self._split(self._process.read_frame(self.startup_timeout_s), "HELLO")
        if kind == wire.ERROR:
            status = self._process.close()  # waits for the exit, so stderr is complete
            raise DeviceError(f"{self.where}: the runner failed to start (exit status {status}): "
                              f"{payload.decode('utf-8', 'replace')}\n"
                              f"its stderr:\n{self._process.stderr_text.strip() or '(empty)'}")
        if kind != wire.HELLO:
            raise ProtocolError(f"{self.where}: the runner's first message has type {kind:#04x}, not HELLO")
        hello = json.loads(payload)
        if hello.get("protocol") != wire.PROTOCOL_VERSION:
            raise DeviceError(f"{self.where}: the runner speaks protocol {hello.get('protocol')}, the host "
                              f"{wire.PROTOCOL_VERSION}: redeploy it")
        files = {"model": self.model_path, "exact_model": self.exact_model_path, "check": self.check_path}
        loaded = hello.get("file_sha256", {})
        for key, path in files.items():
            if path is None:
                continue
            expected = hashlib.sha256(path.read_bytes()).hexdigest()
            if loaded.get(key) != expected:
                raise DeviceError(f"{self.where}: the runner loaded {key} {loaded.get(key)}, expected {expected} "
                                  f"({path}): refusing to benchmark another model")
        return hello

    @property
    def configuration(self) -> dict:
        """How the runner runs the model, what its self-check found, and the CPU's int8 flags."""
        hello = self.hello
        return {"configuration": hello["configuration"], "self_check": hello["self_check"],
                "batching": hello["batching"], "cpu_flags": hello["cpu_flags"]}

    @property
    def hello(self) -> dict:
        """The runner's HELLO: versions, model hash and shapes, cpu model, governor, load time."""
        if self._hello is None:
            raise DeviceError(f"{self.where}: the runner is not started (call deploy())")
        return self._hello

    # -- requests ----------------------------------------------------------------------------

    def encode(self, views: np.ndarray) -> EncodeResult:
        """Node role: integer codes of uint8 views [B, h, w] (an LSTM node: int8 windows
        [B, rows, steps]), device ns per inference, and the host round trip of each batch."""
        return self._codes(self._run_batches(self._node_inputs(views, "encode()")))

    def store(self, views: np.ndarray) -> int:
        """Node role: send ``views`` (as :meth:`encode` takes them) to the device once, to be
        encoded there by :meth:`encode_stored` without crossing the link again, as a node's own
        measurements would be; replaces views stored before. How many the runner keeps."""
        inputs = self._node_inputs(views, "store()")
        frame = wire.encode_frame(wire.STORE, wire.encode_array(inputs))
        # the transfer's share of the timeout: at least 1 MB/s, as a slow Wi-Fi link still gives
        body = self._require().exchange(frame, self.reply_timeout_s + len(frame) / 1e6)
        kind, payload = self._split(body, "STORED")
        if kind == wire.ERROR:
            raise DeviceError(f"{self.where}: the runner refused the stored views: {payload.decode('utf-8', 'replace')}")
        if kind != wire.STORE:
            raise ProtocolError(f"{self.where}: expected STORED, got message type {kind:#04x}")
        kept = int(json.loads(payload)["inputs"])
        if kept != len(inputs):
            raise ProtocolError(f"{self.where}: the runner kept {kept} of {len(inputs)} stored views")
        self._stored = kept
        return kept

    def encode_stored(self, start: int = 0, count: int | None = None) -> EncodeResult:
        """Node role: like :meth:`encode` on the stored views [start, start + count) (None: to
        the end), in batches of ``batch_size`` run and timed as :meth:`encode` runs them. Each
        request carries :data:`STORED_REQUEST_BATCHES` batches and only their range; its reply
        carries their codes and timings, so ``round_trip_s`` is per request."""
        self._require_node("encode_stored()")
        if self._stored is None:
            raise DeviceError(f"{self.where}: no stored views (call store() first)")
        count = self._stored - start if count is None else count
        if start < 0 or count < 1 or start + count > self._stored:
            raise DeviceError(f"{self.where}: stored views [{start}, {start + count}) asked for, "
                              f"{self._stored} are stored")
        per_request = self.batch_size * STORED_REQUEST_BATCHES
        firsts = range(start, start + count, per_request)
        sizes = [min(per_request, start + count - first) for first in firsts]
        frames = (wire.encode_frame(wire.INFER_STORED, wire.STORED_RANGE.pack(first, n, self.batch_size))
                  for first, n in zip(firsts, sizes))
        return self._codes(self._stream(frames, sizes, self.batch_size,
                                        self.reply_timeout_s * STORED_REQUEST_BATCHES))

    @staticmethod
    def _codes(done: _Batches) -> EncodeResult:
        return EncodeResult(done.outputs.astype(np.uint8, copy=False), done.device_ns, done.round_trip_s,
                            done.timed_together)

    def _require_node(self, method: str) -> None:
        if self.role != "node":
            raise DeviceError(f"{self.where} runs the head (gateway role); {method} needs a node")

    def _node_inputs(self, views: np.ndarray, method: str) -> np.ndarray:
        """``views`` checked for this node and as they travel: the wire has no int8, so an LSTM's
        windows go as their two's-complement bytes."""
        self._require_node(method)
        views = np.asarray(views)
        dtype = np.int8 if self.kind == "int-lstm" else np.uint8
        if views.dtype != dtype or views.ndim != 3:
            raise DeviceError(f"{self.where}: {'windows' if self.kind == 'int-lstm' else 'views'} must be "
                              f"{np.dtype(dtype).name} [B, h, w], got {views.dtype} {list(views.shape)}")
        if self.view_shape is not None and tuple(views.shape[1:]) != self.view_shape:
            raise DeviceError(f"{self.where}: the node's model takes {self.view_shape} views, got "
                              f"{tuple(views.shape[1:])}")
        return views.view(np.uint8)

    def classify(self, codes: np.ndarray) -> ClassifyResult:
        """Gateway role: logits for integer codes [B, C] (all nodes' codes in node order)."""
        if self.role != "gateway":
            raise DeviceError(f"{self.where} runs a node encoder; classify() needs the gateway")
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise DeviceError(f"{self.where}: codes must be [B, C], got {list(codes.shape)}")
        if codes.dtype != np.float32:
            if codes.size and (codes.min() < 0 or codes.max() > 255):
                raise DeviceError(f"{self.where}: integer codes must be in 0..255")
            codes = codes.astype(np.uint8)  # the smallest exact form on the wire
        done = self._run_batches(codes)
        return ClassifyResult(done.outputs.astype(np.float32, copy=False), done.device_ns, done.round_trip_s,
                              done.timed_together)

    def _run_batches(self, inputs: np.ndarray) -> _Batches:
        """Batches of ``inputs`` through the runner, :data:`IN_FLIGHT` at a time: while the
        device computes one batch the next ones are already on their way, so the link's latency
        and transfer overlap the device's work. The whole stream is one exchange on the
        connection's event loop (:meth:`RemoteProcess.stream`), so a batch costs the host no
        thread hand-off. A batch's round trip runs from sending it to its reply (so it may
        include waiting behind the batches before it). Every reply is read before a refused
        batch is reported, so the session stays in step."""
        count = len(inputs)
        if not count:
            raise DeviceError(f"{self.where}: nothing to run (empty input)")
        starts = range(0, count, self.batch_size)
        frames = (wire.encode_frame(wire.INFER, wire.encode_array(inputs[s:s + self.batch_size])) for s in starts)
        return self._stream(frames, [min(self.batch_size, count - s) for s in starts], None, self.reply_timeout_s)

    def _stream(self, frames: Iterator[bytes], sizes: list[int], batch: int | None, timeout_s: float) -> _Batches:
        """Requests (``frames``, made as they are sent; ``sizes``: the inputs each covers, in
        batches of ``batch`` for INFER_STORED ranges) through the runner, :data:`IN_FLIGHT` at a
        time, and their replies put together in order."""
        answers = self._require().stream(frames, IN_FLIGHT, timeout_s)
        replies = [self._result(body, n, round_trip, batch) for n, (body, round_trip) in zip(sizes, answers)]
        return _Batches(np.concatenate([r.outputs for r in replies]), np.concatenate([r.device_ns for r in replies]),
                        np.concatenate([r.timed_together for r in replies]),
                        np.asarray([r.round_trip_s for r in replies], dtype=np.float64))

    def _result(self, body: bytes, views: int, round_trip_s: float, batch: int | None = None) -> _Reply:
        """One request's RESULT: outputs, and ns per inference from the device's timings (of one
        batch, or with ``batch``, of an INFER_STORED range of ``views`` in batches of it)."""
        kind, payload = self._split(body, "RESULT")
        if kind == wire.ERROR:
            raise DeviceError(f"{self.where}: the runner refused a batch: {payload.decode('utf-8', 'replace')}")
        if kind != wire.RESULT:
            raise ProtocolError(f"{self.where}: expected RESULT, got message type {kind:#04x}")
        try:
            out, end = wire.decode_array(payload)
            ns, end = wire.decode_array(payload, end)
            device_ns, timed_together = (wire.per_inference_ns(ns, views) if batch is None
                                         else wire.range_inference_ns(ns, views, batch))
        except wire.RunnerError as exc:
            raise ProtocolError(f"{self.where}: malformed RESULT: {exc}") from exc
        if end != len(payload) or out.ndim == 0 or len(out) != views:
            raise ProtocolError(f"{self.where}: RESULT for {views} inputs has outputs {list(out.shape)}")
        return _Reply(out, device_ns, timed_together, round_trip_s)

    def info(self) -> DeviceInfo:
        """CPU model, governor, the runner's peak RSS and CPU time so far, versions, and the timing basis."""
        process = self._require()
        hello = self.hello
        kind, payload = self._split(process.exchange(wire.encode_frame(wire.INFO), self.reply_timeout_s), "INFO")
        if kind != wire.INFO:
            raise ProtocolError(f"{self.where}: expected INFO, got message type {kind:#04x}")
        facts = json.loads(payload)
        return DeviceInfo(device=self.name, cpu_model=facts["cpu_model"], governor=facts["governor"],
                          peak_rss_bytes=int(facts["peak_rss_bytes"]), machine=hello["machine"],
                          python=hello["python"], onnxruntime=hello["onnxruntime"], numpy=hello["numpy"],
                          emulated=self.emulated, timing_basis=self.timing_basis,
                          model_load_ns=int(hello["load_ns"]), inferences=int(facts["inferences"]),
                          cpu_ns=int(facts["cpu_ns"]))

    def _split(self, body: bytes, expecting: str) -> tuple[int, bytes]:
        if not body:
            raise ProtocolError(f"{self.where}: empty frame where {expecting} was expected")
        return body[0], body[1:]

    def _require(self) -> RemoteProcess:
        if self._process is None:
            raise DeviceError(f"{self.where}: the runner is not started (call deploy())")
        return self._process

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Ask the runner to quit and wait for it; safe to call more than once."""
        process, self._process, self._stored = self._process, None, None
        if process is not None:
            try:
                process.close(wire.encode_frame(wire.QUIT))
            except DeviceError:
                pass

    def __enter__(self) -> "LinuxTarget":
        self.deploy()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
