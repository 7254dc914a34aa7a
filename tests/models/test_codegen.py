"""Generated C compiled with the host gcc is bit-exact with the golden model (500 real images),
on both kernel paths: the portable kernels and the DSP kernels (their instructions emulated in C,
see tests/codegen_cases.py)."""
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quant_models import golden
from quant_models.codegen import generate_model_c, write_model_c
from quant_models.intparams import IntEncoder
from quant_models.manifest import load_int_encoders
from tests.codegen_cases import CODE_BITS, KERNEL_PATHS, build_host_library, run_host_model

SAMPLES = 500
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kernels", sorted(KERNEL_PATHS))
@pytest.mark.parametrize("bits", CODE_BITS)
def test_generated_c_matches_golden_bit_for_bit(exported, bits, kernels, tmp_path):
    ex = exported(bits)
    views = ex.trained.cached.partition.views(ex.trained.data.test_x[:SAMPLES])
    for node in (0, 3):
        ienc = load_int_encoders(ex.directory)[node]
        model_c = write_model_c(ienc, tmp_path / f"node{node}" / "model.c")
        assert "Portable kernels only" not in model_c.read_text()  # the DSP path exists for this model
        lib = build_host_library(model_c, tmp_path / f"node{node}", KERNEL_PATHS[kernels])
        got = run_host_model(lib, ienc, views[node])
        mismatches = np.flatnonzero((got != golden.encode_packed(ienc, views[node])).any(axis=1))
        assert mismatches.size == 0, f"node {node}: {mismatches.size} of {SAMPLES} images differ"


def test_model_info_carries_hash_shapes_and_macs(exported, tmp_path):
    ienc = load_int_encoders(exported(4).directory)[1]
    lib = build_host_library(write_model_c(ienc, tmp_path / "model.c"), tmp_path)

    class Info(ctypes.Structure):
        _fields_ = [("hash", ctypes.c_uint8 * 8), ("input_h", ctypes.c_uint16), ("input_w", ctypes.c_uint16),
                    ("code_len", ctypes.c_uint16), ("code_bits", ctypes.c_uint8), ("code_bytes", ctypes.c_uint16),
                    ("macs", ctypes.c_uint32)]

    info = Info.in_dll(lib, "hil_model_info")
    assert bytes(info.hash) == bytes.fromhex(ienc.sha256())[:8]
    assert (info.input_h, info.input_w, info.code_len, info.code_bits, info.code_bytes) == (14, 14, 16, 4, 8)
    assert info.macs == ienc.macs == 14 * 14 * 32 * 25 + 1568 * 16


def test_generated_source_depends_only_on_the_integer_parameters(exported, tmp_path):
    """Firmware builds are cached by the generated source: it must be the same from the saved
    parameters in another interpreter (other hash seed), and change with any one weight."""
    params = exported(2).directory / "node0.int.json"
    here = generate_model_c(IntEncoder.load(params))
    code = ("import sys; from pathlib import Path; from quant_models.intparams import IntEncoder; from "
            "quant_models.codegen import generate_model_c; sys.stdout.write(generate_model_c(IntEncoder.load("
            "Path(sys.argv[1]))))")
    there = subprocess.run([sys.executable, "-c", code, str(params)], capture_output=True, text=True,
                           cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "4242"})
    assert there.returncode == 0, there.stderr
    assert there.stdout == here

    d = json.loads(params.read_text())
    conv = next(op for op in d["ops"] if op["op"] == "conv")
    w = conv["weight"]  # int8 values, flat
    w[7] = w[7] + 1 if w[7] < 127 else w[7] - 1
    (tmp_path / "changed.int.json").write_text(json.dumps(d))
    changed = IntEncoder.load(tmp_path / "changed.int.json")
    changed_c = generate_model_c(changed)
    assert changed_c != here
    assert changed.sha256() in changed_c and IntEncoder.load(params).sha256() not in changed_c
