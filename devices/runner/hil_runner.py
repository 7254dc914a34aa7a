"""hilbench device-side runner: one node encoder or head, batches of inferences over stdin/stdout.

Uploaded to a Linux device (Raspberry Pi or stand-in) and started once per deployment over one
SSH session; it then serves every batch, so no inference pays for a new SSH command. It needs
only the standard library, numpy and onnxruntime (imported in :func:`main`, so the host can
import this file for the protocol functions without them), and, for an LSTM node,
``hil_int_lstm.py`` deployed next to it.

Usage::

    python hil_runner.py --model MODEL.onnx --role node --code-exponent E \
        [--exact-model MODEL.exact.onnx] --check CHECK.npz
    python hil_runner.py --model nodeI.int.json --kind int-lstm --role node --check CHECK.npz
    python hil_runner.py --model head.onnx --role gateway

How a node encoder runs (see :data:`NODE_CONFIGURATIONS`): onnxruntime's default optimizations
fuse the QCDQ graph into u8 x s8 int8 kernels, which on x86 without VNNI sum product pairs in
saturating int16 and give codes that differ from the integer model. So the runner never uses
them; it tries exact configurations, fastest first: the export's exact lowering of the integer
model (``--exact-model``: float32 ops, and int8 matmuls only where no product pair can saturate;
see quant_models/exact_onnx.py), then the QCDQ graph with the QDQ fusion off, then unoptimized. Before
serving, each candidate encodes the export's golden check vectors (``--check``: views and their
golden codes), one view per call; the first whose codes all match is used. HELLO says which ran,
what the others gave, and the CPU's int8-relevant flags; if none matches, the runner refuses to
start. A quantized LSTM node (``--kind int-lstm``) cannot run in onnxruntime (no exporter carries
Brevitas' QuantLSTM): the runner runs its integer model in numpy (``hil_int_lstm``), checked
against the same kind of check vectors; a mismatch is an error.

Batches: where the model's batch axis is free and the check vectors, repeated to
:data:`CHECK_BATCH` views, also give their golden codes run that way, a batch of several views
runs in as few calls as the model allows (an ONNX node: one session.run per
:data:`ONNX_CALL_VIEWS` views; the integer LSTM: one call), which costs a few microseconds a view
instead of one call's overhead each. Its time is then measured once for the whole batch: the
RESULT says so by carrying one timing, and a view's latency is the batch time / views
(:data:`BATCH_TIMING`). A batch of one view, and every batch where the check did not allow it,
runs and is timed view by view. HELLO's ``batching`` says which applies.

Roles: ``node`` runs a node encoder: an ONNX one on uint8 views [B, h, w] (fed as
``pixel / 256``, float32 [B, 1, h, w], the exact input the model was trained and exported with;
the encoder's code *values* become integer codes ``round(value / 2**E)``, uint8 [B, k], as the
harness does), an integer LSTM on int8 windows [B, rows, steps] sent as their bytes (uint8),
giving its offset-binary codes uint8 [B, k]. ``gateway`` runs the head on codes [B, C] (any
integer or float dtype, fed as float32) and returns the logits, float32 [B, classes].

Stored inputs: the host can send a set of inputs once (STORE) and then ask for ranges of it
(INFER_STORED), as a node's own measurements would already be on the device. A range runs in
batches of the size the request gives, each batch run and timed exactly as an INFER of those
inputs, and comes back as one RESULT: per request, the link then carries a few bytes in and the
outputs back, and the runner pays one read and one write for several batches.

Protocol (version 4). Every message, both ways, is one frame::

    u32 big-endian N | N bytes: u8 message type | payload

Arrays inside payloads: ``u8 dtype code | u8 ndim | ndim x u32 big-endian dims | elements``,
little-endian, C order; dtype codes: 1 uint8, 2 float32, 3 int64.

    runner -> host, once at start   HELLO  'H'  UTF-8 JSON: protocol, role, kind, model_sha256,
                                                file_sha256 {model, exact_model, check},
                                                configuration {name, description},
                                                self_check {vectors, tried: [{configuration,
                                                mismatched_codes | error}], fallback},
                                                batching {batch_calls, views_per_call, timing,
                                                checked_batch {views, mismatched_codes}},
                                                cpu_flags, input and output names/shapes,
                                                onnxruntime, numpy, python, executable,
                                                machine, pid, cpu_model, governor,
                                                peak_rss_bytes, load_ns (model loading,
                                                warm-up excluded)
    host -> runner                  INFER  'I'  array: the batch
    runner -> host                  RESULT 'R'  array: outputs, then array: int64 ns
                                                (time.perf_counter_ns, monotonic): [B], each
                                                view's own call, or [1] (B > 1), the calls
                                                that ran the whole batch, timed together
                                                (:func:`per_inference_ns` reads either)
    host -> runner                  STORE  'D'  array: inputs kept for INFER_STORED (replacing
                                                any kept before), checked as an INFER's would be
    runner -> host                  STORED 'D'  UTF-8 JSON: inputs (how many are kept)
    host -> runner                  INFER_STORED 'J'  u32 big-endian start, count, batch: the
                                                kept inputs [start, start + count), run in
                                                batches of ``batch``
    runner -> host                  RESULT 'R'  array: outputs [count, ...], then array: int64 ns,
                                                every batch's timings one after another: [count]
                                                (each view's own call) or one per batch
                                                (:func:`range_inference_ns` reads either)
    host -> runner                  INFO   'S'  empty
    runner -> host                  INFO   'S'  UTF-8 JSON: peak_rss_bytes (getrusage), cpu_model,
                                                governor, inferences, cpu_ns (the runner's CPU
                                                time so far, all threads, user + system)
    host -> runner                  QUIT   'Q'  empty; the runner exits with status 0
    runner -> host                  ERROR  'E'  UTF-8 text, also written to stderr. A bad request
                                                gets ERROR and the runner serves on; a runner
                                                that cannot start (e.g. a corrupt model) sends
                                                ERROR instead of HELLO and exits with status 1.

The runner's stdout carries only frames: at start it moves the real stdout to a private file
descriptor and points fd 1 at stderr, so a library printing to stdout cannot corrupt a frame.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

PROTOCOL_VERSION = 4

HELLO = ord("H")
INFER = ord("I")
RESULT = ord("R")
INFO = ord("S")
QUIT = ord("Q")
ERROR = ord("E")
STORE = ord("D")
INFER_STORED = ord("J")

MAX_FRAME_BYTES = 256 * 1024 * 1024
_LENGTH = struct.Struct(">I")
STORED_RANGE = struct.Struct(">III")  # INFER_STORED: start, count, batch
DTYPE_CODES = {"uint8": 1, "float32": 2, "int64": 3}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}

GOVERNOR_PATH = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
CPUINFO_PATH = "/proc/cpuinfo"
# ARM cpuinfo has no "model name": the part number says which core it is.
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78", "0xd4f": "Neoverse-V2"}


class RunnerError(Exception):
    """A request the runner cannot serve, or a malformed frame."""


# ---------------------------------------------------------------------------------------------
# Framing and arrays (pure; the host imports these too)
# ---------------------------------------------------------------------------------------------

def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    """One frame: length, type byte, payload."""
    return _LENGTH.pack(1 + len(payload)) + bytes([kind]) + payload


def frame_length(header: bytes) -> int:
    """The body length announced by a 4-byte frame header; RunnerError if absurd."""
    (length,) = _LENGTH.unpack(header)
    if not 1 <= length <= MAX_FRAME_BYTES:
        raise RunnerError(f"frame length {length} outside 1..{MAX_FRAME_BYTES}")
    return length


def encode_array(array) -> bytes:
    """``array`` (uint8, float32 or int64 numpy array) as dtype code, dims and LE C-order data."""
    import numpy as np

    array = np.asarray(array)
    name = array.dtype.name
    if name not in DTYPE_CODES:
        raise RunnerError(f"arrays of dtype {name} cannot be sent (uint8, float32, int64 can)")
    if array.ndim > 255:
        raise RunnerError(f"arrays of {array.ndim} dimensions cannot be sent")
    header = bytes([DTYPE_CODES[name], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


MAX_ARRAY_DIMS = 32  # numpy holds 64; the runner's arrays have 1 to 4


def decode_array(payload: bytes, offset: int = 0):
    """(array, offset after it) of the array encoded at ``offset`` in ``payload``."""
    import numpy as np

    if len(payload) < offset + 2:
        raise RunnerError("truncated array header")
    code, ndim = payload[offset], payload[offset + 1]
    if code not in DTYPE_NAMES:
        raise RunnerError(f"unknown array dtype code {code}")
    if ndim > MAX_ARRAY_DIMS:
        raise RunnerError(f"array of {ndim} dimensions (at most {MAX_ARRAY_DIMS})")
    offset += 2
    if len(payload) < offset + 4 * ndim:
        raise RunnerError("truncated array dimensions")
    shape = struct.unpack(f">{ndim}I", payload[offset:offset + 4 * ndim])
    offset += 4 * ndim
    dtype = np.dtype(DTYPE_NAMES[code]).newbyteorder("<")
    count = 1
    for d in shape:
        count *= d
    end = offset + count * dtype.itemsize
    if len(payload) < end:
        raise RunnerError(f"truncated array data: {shape} {dtype.name} needs {end - offset} bytes, "
                          f"{len(payload) - offset} present")
    try:
        array = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
    except ValueError as exc:  # shapes numpy cannot hold (sizes beyond its index range)
        raise RunnerError(f"array of shape {shape} cannot be held: {exc}") from exc
    return array.astype(dtype.newbyteorder("="), copy=False), end


def read_frame(stream: BinaryIO) -> tuple[int, bytes] | None:
    """(type, payload) of the next frame on ``stream``; None at a clean end of input."""
    header = stream.read(4)
    if not header:
        return None
    if len(header) < 4:
        raise RunnerError("input ended inside a frame header")
    length = frame_length(header)
    body = stream.read(length)
    if len(body) < length:
        raise RunnerError(f"input ended inside a frame ({len(body)} of {length} bytes)")
    return body[0], body[1:]


# ---------------------------------------------------------------------------------------------
# Device facts
# ---------------------------------------------------------------------------------------------

def cpu_model(cpuinfo_text: str) -> str:
    """A readable CPU name from /proc/cpuinfo text: x86 "model name", else the ARM board
    "Model" line and core part, else "unknown"."""
    fields: dict[str, str] = {}
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if fields.get("model name"):
        return fields["model name"]
    core = ARM_PARTS.get(fields.get("CPU part", "").lower())
    board = fields.get("Model") or fields.get("Hardware")
    parts = [p for p in (board, core) if p]
    return ", ".join(parts) if parts else "unknown"


INT8_FLAGS = ("avx2", "avx512_vnni", "avx512bw", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve")
"""CPU features that decide which int8 kernels onnxruntime's MLAS uses (x86 flags, ARM Features)."""


def cpu_flags(cpuinfo_text: str | None = None) -> list[str]:
    """The int8-relevant flags of this CPU (or of ``cpuinfo_text``), in :data:`INT8_FLAGS` order."""
    text = (_read_text(CPUINFO_PATH) or "") if cpuinfo_text is None else cpuinfo_text
    present: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            present.update(value.split())
    return [flag for flag in INT8_FLAGS if flag in present]


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def device_facts() -> dict:
    governor = _read_text(GOVERNOR_PATH)
    return {"cpu_model": cpu_model(_read_text(CPUINFO_PATH) or ""),
            "governor": governor.strip() if governor else "unknown",
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "cpu_ns": time.process_time_ns()}


# ---------------------------------------------------------------------------------------------
# Timing: one call per view, or a batch's calls timed together
# ---------------------------------------------------------------------------------------------

PER_VIEW_TIMING = "each inference timed on its own (one call per view)"
BATCH_TIMING = ("a batch of several views runs in as few calls as the model allows, timed as a whole: ns per "
                "inference = batch time / views; a batch of one view is timed on its own")
CHECK_BATCH = 256
ONNX_CALL_VIEWS = 64
"""Most views an ONNX node runs in one session.run. A larger call's activations stop fitting in
the CPU's caches, and each view costs more: measured on the benchmark host (CPU time per view,
1 thread, busy machine) 8.2 us in calls of 64 or 128 views, 9.9 us in calls of 256 (and, unloaded,
twice as much in calls of 512)."""
"""Views in the batched self-check (the check vectors repeated): a batch as large as the host's default."""


def per_inference_ns(call_ns, views: int) -> tuple[Any, Any]:
    """(int64 ns per inference [views], int64 views timed together [views]) from a RESULT's
    timings: one per view (each timed on its own) or one for the whole batch (split evenly, the
    remainder's nanoseconds to the first views, so the shares add up to the batch time)."""
    import numpy as np

    call_ns = np.asarray(call_ns, dtype=np.int64)
    if call_ns.shape == (views,):
        return call_ns, np.ones(views, dtype=np.int64)
    if call_ns.shape == (1,) and views > 1:
        share, rest = divmod(int(call_ns[0]), views)  # the shares add up to the batch time exactly
        ns = np.full(views, share, dtype=np.int64)
        ns[:rest] += 1
        return ns, np.full(views, views, dtype=np.int64)
    raise RunnerError(f"{list(call_ns.shape)} timings for a batch of {views} views "
                      f"(one per view, or one for the whole batch)")


def range_inference_ns(call_ns, count: int, batch: int) -> tuple[Any, Any]:
    """(int64 ns per inference [count], int64 views timed together [count]) from the RESULT of
    an INFER_STORED of ``count`` inputs in batches of ``batch``: one timing per view, or one per
    batch (the runner times every batch of several views together, or none: a model's batching
    does not change while it serves; a batch of one view is its own call either way)."""
    import numpy as np

    if count < 1 or batch < 1:
        raise RunnerError(f"a range of {count} inputs in batches of {batch}")
    call_ns = np.asarray(call_ns, dtype=np.int64)
    sizes = [min(batch, count - start) for start in range(0, count, batch)]
    if call_ns.shape == (count,):
        return call_ns, np.ones(count, dtype=np.int64)
    if call_ns.shape != (len(sizes),):
        raise RunnerError(f"{list(call_ns.shape)} timings for {count} inputs in batches of {batch} "
                          f"(one per view, or one per batch: {len(sizes)})")
    parts = [per_inference_ns(call_ns[i:i + 1], size) for i, size in enumerate(sizes)]
    return np.concatenate([ns for ns, _ in parts]), np.concatenate([shared for _, shared in parts])


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Configuration:
    """One way to run a model: in onnxruntime, which file (``export``: the exported ONNX, QCDQ
    for a node; ``exact``: a node's exact float32 lowering), which graph optimization level,
    which session config entries; or ``int-lstm``: the integer LSTM in numpy."""

    name: str
    model: str  # "export" | "exact" | "int-lstm"
    level: str  # an onnxruntime GraphOptimizationLevel name ("" outside onnxruntime)
    entries: dict[str, str] = field(default_factory=dict)
    description: str = ""


NODE_CONFIGURATIONS = (
    Configuration("exact-float", "exact", "ORT_ENABLE_ALL", {"session.disable_quant_qdq": "1"},
                  "float32 lowering of the integer model (integer-valued tensors, partial sums below 2^24; fully "
                  "connected layers whose u8 x s8 products provably cannot saturate as integer matmuls), all "
                  "graph optimizations but the QDQ ones"),
    Configuration("qcdq-unfused", "export", "ORT_ENABLE_ALL", {"session.disable_quant_qdq": "1"},
                  "QCDQ graph, all optimizations but the QDQ fusion into int8 kernels (float kernels between Q/DQ)"),
    Configuration("qcdq-unoptimized", "export", "ORT_DISABLE_ALL", {},
                  "QCDQ graph as exported, no graph optimization"),
)
"""A node encoder's exact configurations, fastest first (measured: scripts/bench_linux.py)."""

ORT_DEFAULT_FUSED = Configuration("qcdq-default", "export", "ORT_ENABLE_ALL", {},
                                  "onnxruntime's default: QDQ fused into u8 x s8 int8 kernels (saturating int16 "
                                  "pair sums on x86 without VNNI); never used by the runner")
# The exact model's metadata: its output's codes are clip(rint(value), code_min, code_max)
# (the same keys as quant_models.exact_onnx, which writes them).
CODE_MIN_KEY, CODE_MAX_KEY = "hilbench.code_min", "hilbench.code_max"

GATEWAY_CONFIGURATION = Configuration("float", "export", "ORT_ENABLE_ALL", {}, "the float head, all optimizations")

INT_LSTM_CONFIGURATION = Configuration(
    "int-lstm-numpy", "int-lstm", "", {},
    "integer LSTM in numpy on the device; onnxruntime cannot run Brevitas' QuantLSTM")


def session_options(configuration: Configuration, threads: int) -> Any:
    """onnxruntime SessionOptions for ``configuration`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, configuration.level)
    for key, value in configuration.entries.items():
        options.add_session_config_entry(key, value)
    return options


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class RunnerModel:
    """What :func:`serve` runs: a request batch in, outputs and device timings out.

    Subclasses say how a request becomes the model's input (:meth:`model_input`), how one call
    runs (:meth:`_run`) and how its raw output becomes the reply (:meth:`outputs_of`). A node
    proves its configuration with the export's check vectors (``check``: views [n, ...], golden
    codes uint8 [n, k]): one view per call, then (where the batch axis is free) the vectors
    repeated to :data:`CHECK_BATCH` views in batch calls (``call_views`` views each, None: all
    in one); only a configuration that passes both runs batches that way
    (:data:`BATCH_TIMING`), else every view is its own call."""

    role: str
    sha256: str
    file_sha256: dict[str, str]
    configuration: Configuration
    input_name: str
    input_shape: list[int | None]
    outputs: list[dict[str, Any]]
    load_ns: int

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self.inferences = 0
        self.tried: list[dict[str, Any]] = []
        self.check_vectors = 0
        self.batched = False
        self.call_views: int | None = None  # most views per call in a batch (None: the whole batch)
        self.batch_check: dict[str, Any] = {"views": 0, "mismatched_codes": None}
        self.stored: Any = None  # the inputs kept by STORE, as a request batch

    # -- what a subclass provides ------------------------------------------------------------

    def model_input(self, batch) -> Any:
        raise NotImplementedError

    def _run(self, x) -> Any:
        raise NotImplementedError

    def outputs_of(self, values) -> Any:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------

    def infer(self, batch, count: bool = True) -> tuple[Any, Any]:
        """(outputs, int64 ns per call): a batch of several views as one timed call where the
        self-check allowed it (one timing), else one timed call per view (one timing each)."""
        np = self._np
        x = self.model_input(batch)
        n = x.shape[0]
        clock = time.perf_counter_ns
        if self.batched and n > 1:
            step = self.call_views or n
            started = clock()
            values = np.concatenate([self._run(x[s:s + step]) for s in range(0, n, step)])
            timings = np.array([clock() - started], dtype=np.int64)
        else:
            timings = np.empty(n, dtype=np.int64)
            parts = []
            run = self._run
            for i in range(n):
                sample = x[i:i + 1]
                started = clock()
                out = run(sample)
                timings[i] = clock() - started
                parts.append(out)
            values = np.concatenate(parts, axis=0) if parts else None
        if count:
            self.inferences += n
        return self.outputs_of(values), timings

    def store(self, inputs) -> int:
        """Keep ``inputs`` (a request batch of any size) for :meth:`infer_stored`; how many. They
        are checked as an INFER's would be, now rather than at the first range."""
        if not len(inputs):
            raise RunnerError("nothing to store (an empty array)")
        self.model_input(inputs[:1])
        self.stored = inputs
        return len(inputs)

    def infer_stored(self, start: int, count: int, batch: int) -> tuple[Any, Any]:
        """(outputs, int64 ns) of the kept inputs [start, start + count) in batches of
        ``batch``, each run as :meth:`infer` runs a request batch; every batch's timings in
        order (see :func:`range_inference_ns`)."""
        np = self._np
        if self.stored is None:
            raise RunnerError("no stored inputs (send STORE first)")
        if count < 1 or batch < 1 or start + count > len(self.stored):
            raise RunnerError(f"inputs [{start}, {start + count}) in batches of {batch}: "
                              f"{len(self.stored)} are stored")
        outputs, timings = [], []
        for first in range(start, start + count, batch):
            out, ns = self.infer(self.stored[first:min(first + batch, start + count)])
            outputs.append(out)
            timings.append(ns)
        return np.concatenate(outputs), np.concatenate(timings)

    def _mismatches(self, views, codes) -> int:
        got, _ = self.infer(views, count=False)
        if got.shape != codes.shape:
            raise RunnerError(f"the check vectors' codes are {list(codes.shape)}, the model gives {list(got.shape)}")
        return int((got != codes).sum())

    def _check_batched(self, check) -> None:
        """Let batches run in batch calls if the check vectors, repeated to CHECK_BATCH views, give
        their golden codes run that way."""
        np = self._np
        views, codes = check
        if not len(views) or self.input_shape[0] is not None:
            return
        reps = -(-CHECK_BATCH // len(views))
        tiled_views = np.concatenate([views] * reps)[:CHECK_BATCH]
        tiled_codes = np.concatenate([codes] * reps)[:CHECK_BATCH]
        self.batched = True
        try:
            bad = self._mismatches(tiled_views, tiled_codes)
            self.batch_check = {"views": len(tiled_views), "mismatched_codes": bad}
        except Exception as exc:  # a batch the model cannot run (RunnerError, onnxruntime's own errors)
            self.batch_check = {"views": len(tiled_views), "mismatched_codes": None,
                                "error": f"{type(exc).__name__}: {exc}"}
        finally:
            self.batched = False
        self.batched = self.batch_check["mismatched_codes"] == 0

    def describe(self) -> dict[str, Any]:
        """Which configuration runs, what the self-check found, how batches are run and timed, and
        the CPU's int8 flags (HELLO)."""
        return {"configuration": {"name": self.configuration.name, "description": self.configuration.description},
                "self_check": {"vectors": self.check_vectors, "tried": self.tried, "fallback": len(self.tried) > 1},
                "batching": {"batch_calls": self.batched, "views_per_call": self.call_views if self.batched else 1,
                             "timing": BATCH_TIMING if self.batched else PER_VIEW_TIMING,
                             "checked_batch": self.batch_check},
                "cpu_flags": cpu_flags()}


class Model(RunnerModel):
    """An onnxruntime session plus the role's input/output conversion.

    A node chooses its configuration by the self-check (see the module docstring and
    :class:`RunnerModel`)."""

    def __init__(self, path: str, role: str, code_exponent: int | None, threads: int,
                 exact_path: str | None = None, check: tuple[Any, Any] | None = None,
                 configurations: tuple[Configuration, ...] | None = None) -> None:
        super().__init__()
        if role == "node" and code_exponent is None:
            raise RunnerError("role 'node' needs --code-exponent")
        self.role = role
        self.sha256 = _sha256(path)
        self.file_sha256 = {"model": self.sha256}
        if exact_path is not None:
            self.file_sha256["exact_model"] = _sha256(exact_path)
        self.paths = {"export": path, "exact": exact_path}
        if role == "gateway":
            candidates: tuple[Configuration, ...] = (GATEWAY_CONFIGURATION,)
        else:
            candidates = configurations or tuple(c for c in NODE_CONFIGURATIONS
                                                  if c.model == "export" or exact_path is not None)
        for configuration in candidates:
            self._open(configuration, threads, code_exponent)
            if check is None:
                break
            mismatched = self._mismatches(*check)
            self.tried.append({"configuration": configuration.name, "mismatched_codes": mismatched})
            if mismatched == 0:
                break
        else:
            raise RunnerError("no exact configuration: every candidate's codes differ from the export's golden "
                              f"check vectors ({self.tried}); CPU int8 flags: {' '.join(cpu_flags()) or 'none'}")
        if check is not None:
            self.check_vectors = int(len(check[0]))
            self.call_views = ONNX_CALL_VIEWS
            self._check_batched(check)

    def _open(self, configuration: Configuration, threads: int, code_exponent: int | None) -> None:
        import onnxruntime as ort

        np = self._np
        path = self.paths[configuration.model]
        if path is None:
            raise RunnerError(f"configuration {configuration.name!r} needs the {configuration.model} model")
        started = time.perf_counter_ns()
        self.session = ort.InferenceSession(path, sess_options=session_options(configuration, threads),
                                            providers=["CPUExecutionProvider"])
        self.load_ns = time.perf_counter_ns() - started
        self.configuration = configuration
        self.code_exponent, self.code_bounds = code_exponent, None
        if configuration.model == "exact":  # its output is the codes before the last rint and clip
            meta = self.session.get_modelmeta().custom_metadata_map
            try:
                self.code_exponent, self.code_bounds = 0, (int(meta[CODE_MIN_KEY]), int(meta[CODE_MAX_KEY]))
            except (KeyError, ValueError) as exc:
                raise RunnerError(f"{path}: the exact model's metadata has no code bounds ({CODE_MIN_KEY}, "
                                  f"{CODE_MAX_KEY})") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = [d if isinstance(d, int) else None for d in inp.shape]
        self.outputs = [{"name": o.name, "shape": [d if isinstance(d, int) else None for d in o.shape]}
                        for o in self.session.get_outputs()]
        # One warm-up inference, so the first timed one does not pay for lazy initialisation.
        self.session.run(None, {self.input_name: np.zeros([d or 1 for d in self.input_shape], np.float32)})

    def _run(self, x):
        return self.session.run(None, {self.input_name: x})[0]

    def model_input(self, batch):
        """The float32 tensor the model takes for a request batch."""
        np = self._np
        if self.role == "node":
            if batch.dtype != np.uint8 or batch.ndim != 3:
                raise RunnerError(f"a node takes uint8 views [B, h, w], got {batch.dtype} {list(batch.shape)}")
            x = np.multiply(batch, np.float32(1 / 256), dtype=np.float32)[:, None]  # = pixel / 256 exactly
        else:
            if batch.ndim != 2:
                raise RunnerError(f"a gateway takes codes [B, C], got {list(batch.shape)}")
            x = batch.astype(np.float32)
        expected = self.input_shape[1:]
        if any(e is not None and e != g for e, g in zip(expected, x.shape[1:])) or len(expected) != x.ndim - 1:
            raise RunnerError(f"model input {self.input_name!r} has shape {self.input_shape}, "
                              f"request gives {list(x.shape)}")
        return x

    def outputs_of(self, values):
        """Node: integer codes round(value / 2**E) (and, for the exact model, clipped to its code
        bounds) as uint8, for the whole batch at once; gateway: float32 logits."""
        np = self._np
        if values is None:  # an empty batch
            values = np.zeros([0] + [d or 0 for d in self.outputs[0]["shape"][1:]], np.float32)
        if self.role == "gateway":
            return values.astype(np.float32)
        if self.code_exponent is None:  # __init__ requires it for role "node"
            raise RunnerError(f"role {self.role!r} has no code exponent to turn values into codes")
        codes = np.rint(values.astype(np.float64) / 2.0 ** self.code_exponent)
        if self.code_bounds is not None:
            codes = np.clip(codes, *self.code_bounds)
        if codes.size and (codes.min() < 0 or codes.max() > 255):
            raise RunnerError(f"codes out of the uint8 range: [{codes.min()}, {codes.max()}]")
        return codes.reshape(codes.shape[0], -1).astype(np.uint8)


def _int_lstm_module() -> Any:
    """hil_int_lstm: imported from the repository on the host, from next to this script on the device."""
    import importlib

    return importlib.import_module(f"{__package__}.hil_int_lstm" if __package__ else "hil_int_lstm")


class IntLstmModel(RunnerModel):
    """A node's quantized LSTM encoder as integers in numpy (``hil_int_lstm``), on int8 windows
    [B, rows, steps] (on the wire: their bytes as uint8). Self-checked like an ONNX node; there
    is one configuration, so a mismatch is an error."""

    def __init__(self, path: str, check: tuple[Any, Any] | None = None) -> None:
        super().__init__()
        lstm = _int_lstm_module()
        self.role = "node"
        self.sha256 = _sha256(path)
        self.file_sha256 = {"model": self.sha256}
        self.configuration = INT_LSTM_CONFIGURATION
        started = time.perf_counter_ns()
        try:
            self.lstm = lstm.load(path)
        except (OSError, ValueError) as exc:
            raise RunnerError(f"cannot load the integer LSTM {path}: {exc}") from exc
        self.load_ns = time.perf_counter_ns() - started
        self._encode = lstm.encode
        self.input_name = "windows"
        self.input_shape = [None, self.lstm.rows, self.lstm.steps]
        self.outputs = [{"name": "codes", "shape": [None, self.lstm.code_len]}]
        if check is not None:
            mismatched = self._mismatches(*check)
            self.tried.append({"configuration": self.configuration.name, "mismatched_codes": mismatched})
            if mismatched:
                raise RunnerError(f"the integer LSTM's codes differ from the export's golden check vectors in "
                                  f"{mismatched} places: the model file and its check vectors do not belong "
                                  "together, or this numpy computes differently")
            self.check_vectors = int(len(check[0]))
            self._check_batched(check)

    def model_input(self, batch):
        np = self._np
        if batch.dtype == np.uint8:  # the wire has no int8: windows travel as their bytes
            batch = batch.view(np.int8)
        if batch.dtype != np.int8 or list(batch.shape[1:]) != self.input_shape[1:] or batch.ndim != 3:
            raise RunnerError(f"an LSTM node takes int8 windows {self.input_shape} (as uint8 bytes), "
                              f"got {batch.dtype} {list(batch.shape)}")
        return batch

    def _run(self, x):
        return self._encode(self.lstm, x)

    def outputs_of(self, values):
        return self._np.zeros((0, self.lstm.code_len), self._np.uint8) if values is None else values


def load_check(path: str) -> tuple[Any, Any]:
    """The export's check vectors: (views [n, ...] (uint8 pixels or int8 windows), golden codes uint8 [n, k])."""
    import numpy as np

    with np.load(path) as data:
        return data["views"], data["codes"]


# ---------------------------------------------------------------------------------------------
# Main loop
# ---------------------------------------------------------------------------------------------

def _error_frame(text: str) -> bytes:
    """An ERROR frame for ``text``, which also goes to stderr (the host shows it on a crash)."""
    sys.stderr.write(f"hil_runner: error: {text}\n")
    sys.stderr.flush()
    return encode_frame(ERROR, text.encode("utf-8", "replace"))


def _error(out: BinaryIO, text: str) -> None:
    out.write(_error_frame(text))
    out.flush()


def _only_array(payload: bytes, message: str) -> Any:
    """The one array a ``message`` payload carries; RunnerError if bytes follow it."""
    array, end = decode_array(payload)
    if end != len(payload):
        raise RunnerError(f"{len(payload) - end} stray bytes after the {message} array")
    return array


def _result_frame(outputs: Any, timings: Any) -> bytes:
    return encode_frame(RESULT, encode_array(outputs) + encode_array(timings))


def _reply(model: RunnerModel, kind: int, payload: bytes) -> bytes:
    """The reply frame to one request (ERROR for a request the runner cannot serve)."""
    try:
        if kind == INFER:
            return _result_frame(*model.infer(_only_array(payload, "INFER")))
        if kind == INFER_STORED:
            if len(payload) != STORED_RANGE.size:
                raise RunnerError(f"INFER_STORED carries {STORED_RANGE.size} bytes (start, count, batch), "
                                  f"not {len(payload)}")
            return _result_frame(*model.infer_stored(*STORED_RANGE.unpack(payload)))
        if kind == STORE:
            return encode_frame(STORE, json.dumps({"inputs": model.store(_only_array(payload, "STORE"))}).encode())
        if kind == INFO:
            facts = device_facts() | {"inferences": model.inferences}
            return encode_frame(INFO, json.dumps(facts).encode())
        raise RunnerError(f"unknown message type {kind:#04x}")
    except RunnerError as exc:
        return _error_frame(str(exc))
    except Exception as exc:  # onnxruntime raises its own types; the host gets the text
        return _error_frame(f"{type(exc).__name__}: {exc}")


def serve(model: RunnerModel, inp: BinaryIO, out: BinaryIO) -> int:
    """Answer requests until QUIT (status 0), the end of input (status 0: the host left) or a
    bad frame (status 2, after an ERROR reply)."""
    while True:
        try:
            frame = read_frame(inp)
        except RunnerError as exc:
            _error(out, f"bad frame: {exc}")
            return 2
        if frame is None or frame[0] == QUIT:
            return 0
        out.write(_reply(model, *frame))
        out.flush()


def _protocol_stdout() -> BinaryIO:
    """The real stdout as a private binary stream; fd 1 then points at stderr."""
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(private, "wb", buffering=0)


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def load_model(args: argparse.Namespace) -> RunnerModel:
    """The model the command line names, self-checked."""
    check = load_check(args.check) if args.check else None
    model: RunnerModel
    if args.kind == "int-lstm":
        if args.role != "node":
            raise RunnerError("an integer LSTM is a node encoder (--role node)")
        model = IntLstmModel(args.model, check)
    else:
        model = Model(args.model, args.role, args.code_exponent, args.threads, args.exact_model, check)
    if args.check:
        model.file_sha256["check"] = _sha256(args.check)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hilbench device-side runner (protocol on stdin/stdout)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--role", choices=("node", "gateway"), required=True)
    parser.add_argument("--kind", choices=("onnx", "int-lstm"), default="onnx",
                        help="the model file: ONNX (onnxruntime) or a node's integer LSTM (numpy)")
    parser.add_argument("--code-exponent", type=int, default=None)
    parser.add_argument("--exact-model", default=None, help="node: the export's exact float32 lowering")
    parser.add_argument("--check", default=None, help="node: the export's check vectors (.npz: views, codes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime intra-op and numpy BLAS threads (default 1, as one small inference "
                             "is latency-bound)")
    args = parser.parse_args(argv)
    for variable in BLAS_THREAD_VARIABLES:  # read by numpy's BLAS when it loads: before the import below
        os.environ[variable] = str(args.threads)
    out = _protocol_stdout()
    inp = sys.stdin.buffer
    try:
        import numpy
        import onnxruntime

        model = load_model(args)
    except Exception as exc:
        _error(out, f"cannot load model {args.model!r}: {type(exc).__name__}: {exc}")
        return 1
    hello = {"protocol": PROTOCOL_VERSION, "role": args.role, "kind": args.kind, "model_sha256": model.sha256,
             "file_sha256": model.file_sha256, **model.describe(),
             "input_name": model.input_name, "input_shape": model.input_shape, "outputs": model.outputs,
             "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
             "python": platform.python_version(), "executable": sys.executable, "machine": platform.machine(),
             "load_ns": model.load_ns, "pid": os.getpid(), **device_facts()}
    out.write(encode_frame(HELLO, json.dumps(hello).encode()))
    out.flush()
    return serve(model, inp, out)


if __name__ == "__main__":
    sys.exit(main())
