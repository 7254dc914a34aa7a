"""hilbench device-side runner: one ONNX model, batches of inferences over stdin/stdout.

Uploaded to a Linux device (Raspberry Pi or stand-in) and started once per deployment over one
SSH session; it then serves every batch, so no inference pays for a new SSH command. It needs
only the standard library, numpy and onnxruntime (imported in :func:`main`, so the host can
import this file for the protocol functions without them).

Usage::

    python hil_runner.py --model MODEL.onnx --role node --code-exponent E
    python hil_runner.py --model head.onnx --role gateway

Roles: ``node`` runs a node encoder on uint8 views [B, h, w]: it feeds ``pixel / 256`` as float32
[B, 1, h, w] (the exact input the model was trained and exported with) and turns the encoder's
code *values* into integer codes, ``round(value / 2**E)``, uint8 [B, k], as the harness does.
``gateway`` runs the head on codes [B, C] (any integer or float dtype, fed as float32) and
returns the logits, float32 [B, classes].

Protocol (version 1). Every message, both ways, is one frame::

    u32 big-endian N | N bytes: u8 message type | payload

Arrays inside payloads: ``u8 dtype code | u8 ndim | ndim x u32 big-endian dims | elements``,
little-endian, C order; dtype codes: 1 uint8, 2 float32, 3 int64.

    runner -> host, once at start   HELLO  'H'  UTF-8 JSON: protocol, role, model_sha256,
                                                input and output names/shapes, onnxruntime,
                                                numpy, python, executable, machine, pid,
                                                cpu_model, governor, peak_rss_bytes,
                                                load_ns (session creation, warm-up excluded)
    host -> runner                  INFER  'I'  array: the batch
    runner -> host                  RESULT 'R'  array: outputs, then array: int64 [B] ns per
                                                inference (time.perf_counter_ns around each
                                                session.run of one sample; monotonic)
    host -> runner                  INFO   'S'  empty
    runner -> host                  INFO   'S'  UTF-8 JSON: peak_rss_bytes (getrusage), cpu_model,
                                                governor, inferences, onnxruntime
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
from typing import BinaryIO

PROTOCOL_VERSION = 1

HELLO = ord("H")
INFER = ord("I")
RESULT = ord("R")
INFO = ord("S")
QUIT = ord("Q")
ERROR = ord("E")

MAX_FRAME_BYTES = 256 * 1024 * 1024
_LENGTH = struct.Struct(">I")
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


def decode_array(payload: bytes, offset: int = 0):
    """(array, offset after it) of the array encoded at ``offset`` in ``payload``."""
    import numpy as np

    if len(payload) < offset + 2:
        raise RunnerError("truncated array header")
    code, ndim = payload[offset], payload[offset + 1]
    if code not in DTYPE_NAMES:
        raise RunnerError(f"unknown array dtype code {code}")
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
    array = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
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
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

class Model:
    """An onnxruntime session plus the role's input/output conversion."""

    def __init__(self, path: str, role: str, code_exponent: int | None, threads: int) -> None:
        import numpy as np
        import onnxruntime as ort

        if role == "node" and code_exponent is None:
            raise RunnerError("role 'node' needs --code-exponent")
        with open(path, "rb") as f:
            self.sha256 = hashlib.sha256(f.read()).hexdigest()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        started = time.perf_counter_ns()
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.load_ns = time.perf_counter_ns() - started
        self.role = role
        self.code_exponent = code_exponent
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = [d if isinstance(d, int) else None for d in inp.shape]
        self.outputs = [{"name": o.name, "shape": [d if isinstance(d, int) else None for d in o.shape]}
                        for o in self.session.get_outputs()]
        self.inferences = 0
        self._np = np
        # One warm-up inference, so the first timed one does not pay for lazy initialisation.
        self.session.run(None, {self.input_name: np.zeros([d or 1 for d in self.input_shape], np.float32)})

    def model_input(self, batch):
        """The float32 tensor the model takes for a request batch."""
        np = self._np
        if self.role == "node":
            if batch.dtype != np.uint8 or batch.ndim != 3:
                raise RunnerError(f"a node takes uint8 views [B, h, w], got {batch.dtype} {list(batch.shape)}")
            x = (batch.astype(np.float32) / np.float32(256.0))[:, None]
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
        """Node: integer codes round(value / 2**E) as uint8; gateway: float32 logits."""
        np = self._np
        if self.role == "gateway":
            return values.astype(np.float32)
        if self.code_exponent is None:  # __init__ requires it for role "node"
            raise RunnerError(f"role {self.role!r} has no code exponent to turn values into codes")
        codes = np.rint(values.astype(np.float64) / 2.0 ** self.code_exponent)
        if codes.size and (codes.min() < 0 or codes.max() > 255):
            raise RunnerError(f"codes out of the uint8 range: [{codes.min()}, {codes.max()}]")
        return codes.reshape(codes.shape[0], -1).astype(np.uint8)

    def infer(self, batch) -> tuple[object, object]:
        """(outputs, int64 ns per inference): one session.run per sample, each timed."""
        np = self._np
        x = self.model_input(batch)
        n = x.shape[0]
        timings = np.empty(n, dtype=np.int64)
        values = []
        run, name = self.session.run, self.input_name
        clock = time.perf_counter_ns
        for i in range(n):
            sample = x[i:i + 1]
            started = clock()
            out = run(None, {name: sample})[0]
            timings[i] = clock() - started
            values.append(out)
        self.inferences += n
        stacked = np.concatenate(values, axis=0) if values else np.zeros((0,), np.float32)
        return self.outputs_of(stacked), timings


# ---------------------------------------------------------------------------------------------
# Main loop
# ---------------------------------------------------------------------------------------------

def _error(out: BinaryIO, text: str) -> None:
    sys.stderr.write(f"hil_runner: error: {text}\n")
    sys.stderr.flush()
    out.write(encode_frame(ERROR, text.encode("utf-8", "replace")))
    out.flush()


def serve(model: Model, inp: BinaryIO, out: BinaryIO) -> int:
    """Answer requests until QUIT (status 0) or the end of input (status 0: the host left)."""
    while True:
        try:
            frame = read_frame(inp)
        except RunnerError as exc:
            _error(out, f"bad frame: {exc}")
            return 2
        if frame is None:
            return 0
        kind, payload = frame
        if kind == QUIT:
            return 0
        try:
            if kind == INFER:
                batch, end = decode_array(payload)
                if end != len(payload):
                    raise RunnerError(f"{len(payload) - end} stray bytes after the INFER array")
                outputs, timings = model.infer(batch)
                reply = encode_frame(RESULT, encode_array(outputs) + encode_array(timings))
            elif kind == INFO:
                facts = device_facts() | {"inferences": model.inferences}
                reply = encode_frame(INFO, json.dumps(facts).encode())
            else:
                raise RunnerError(f"unknown message type {kind:#04x}")
        except RunnerError as exc:
            _error(out, str(exc))
            continue
        except Exception as exc:  # onnxruntime raises its own types; the host gets the text
            _error(out, f"{type(exc).__name__}: {exc}")
            continue
        out.write(reply)
        out.flush()


def _protocol_stdout() -> BinaryIO:
    """The real stdout as a private binary stream; fd 1 then points at stderr."""
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(private, "wb", buffering=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hilbench device-side ONNX runner (protocol on stdin/stdout)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--role", choices=("node", "gateway"), required=True)
    parser.add_argument("--code-exponent", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime intra-op threads (default 1: one sample per inference is latency-bound)")
    args = parser.parse_args(argv)
    out = _protocol_stdout()
    inp = sys.stdin.buffer
    try:
        import numpy
        import onnxruntime

        model = Model(args.model, args.role, args.code_exponent, args.threads)
    except Exception as exc:
        _error(out, f"cannot load model {args.model!r}: {type(exc).__name__}: {exc}")
        return 1
    hello = {"protocol": PROTOCOL_VERSION, "role": args.role, "model_sha256": model.sha256,
             "input_name": model.input_name, "input_shape": model.input_shape, "outputs": model.outputs,
             "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
             "python": platform.python_version(), "executable": sys.executable, "machine": platform.machine(),
             "load_ns": model.load_ns, "pid": os.getpid(), **device_facts()}
    out.write(encode_frame(HELLO, json.dumps(hello).encode()))
    out.flush()
    return serve(model, inp, out)


if __name__ == "__main__":
    sys.exit(main())
