"""Real generated encoders in firmware on emulated Cortex-M boards, against the golden model:
500 real test images per node, every board (DSP kernels on the Cortex-M4s, portable kernels on
the Cortex-M3) and every q."""
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np
import pytest

from harness.targets.mcu.deploy import build_node_firmware, deploy_mcu_node, model_hash8
from harness.core.errors import DeviceError
from harness.config.profiles import get_profile
from quant_models import golden
from quant_models.manifest import load_int_encoders
from tests.codegen_cases import firmware_runs_dsp_kernels

SAMPLES = 500
DEVICES = ["stm32f405-qemu", "mps2-an386-qemu", "mps2-an385-qemu"]
DSP_DEVICES = {"stm32f405-qemu", "mps2-an386-qemu"}  # Cortex-M4: the DSP kernels; the M3 runs the portable ones
MAX_INSTRUCTIONS_PER_MAC = 1.0  # the paper encoder on the DSP kernels (issue 13's bar)


def encode_on_devices(nodes, views):
    """Each node's replies to its views, the nodes in parallel."""
    def run(i):
        return [nodes[i].target.infer(v.tobytes()) for v in views[i]]

    with ThreadPoolExecutor(len(nodes)) as pool:
        return list(pool.map(run, range(len(nodes))))


def assert_golden(device, encoder, replies, views):
    got = np.array([np.frombuffer(r.code, np.uint8) for r in replies])
    bad = np.flatnonzero((got != golden.encode_packed(encoder, views)).any(axis=1))
    assert bad.size == 0, f"{device} node {encoder.node} q={encoder.code_bits}: {bad.size} of {len(views)} codes differ"


@pytest.mark.parametrize("device", DEVICES)
def test_four_nodes_return_golden_codes_bit_for_bit(exported, device):
    ex = exported(4)
    profile = get_profile(device)
    encoders = load_int_encoders(ex.directory)
    views = ex.trained.cached.partition.views(ex.trained.data.test_x[:SAMPLES])
    with ExitStack() as stack:
        nodes = [stack.enter_context(deploy_mcu_node(profile, enc)) for enc in encoders]
        for node in nodes:
            hello = node.target.hello
            assert hello.model_hash == model_hash8(node.encoder)
            assert (hello.input_h, hello.input_w, hello.code_len, hello.code_bits, hello.code_bytes) == (14, 14, 16, 4, 8)
            assert hello.macs == node.encoder.macs and hello.node_id == node.encoder.node
            assert firmware_runs_dsp_kernels(node.firmware.elf) == (device in DSP_DEVICES)
        results = encode_on_devices(nodes, views)
    for i, (enc, node_results) in enumerate(zip(encoders, results)):
        assert_golden(device, enc, node_results, views[i])
        work = nodes[i].target.work(node_results[0].ticks)
        assert work.unit == "instructions" and work.emulated and work.microseconds is None
        if device in DSP_DEVICES:  # counted instructions (QEMU -icount), not cycles
            assert work.count <= MAX_INSTRUCTIONS_PER_MAC * enc.macs, f"{work.count / enc.macs:.3f} per MAC"
        else:
            assert work.count > enc.macs  # the portable kernels: at least one instruction per MAC


@pytest.mark.parametrize("bits", [1, 2, 3, 8])
@pytest.mark.parametrize("device", DEVICES)
def test_every_q_returns_golden_codes_bit_for_bit(exported, device, bits):
    """q = 4 is above (four nodes); here one node per q, a different one each time."""
    ex = exported(bits)
    encoder = load_int_encoders(ex.directory)[bits % 4]
    views = ex.trained.cached.partition.views(ex.trained.data.test_x[:SAMPLES])[encoder.node]
    with deploy_mcu_node(get_profile(device), encoder) as node:
        assert firmware_runs_dsp_kernels(node.firmware.elf) == (device in DSP_DEVICES)
        [replies] = encode_on_devices([node], [views])
    assert_golden(device, encoder, replies, views)


def test_instruction_counts_identical_across_fresh_runs(exported):
    ex = exported(4)
    profile = get_profile("stm32f405-qemu")
    enc = load_int_encoders(ex.directory)[0]
    views = ex.trained.cached.partition.views(ex.trained.data.test_x[:20])[0]
    runs = []
    for _ in range(2):
        with deploy_mcu_node(profile, enc) as node:
            runs.append([node.target.infer(v.tobytes()).ticks for v in views])
    assert runs[0] == runs[1]


def test_firmware_of_another_model_is_refused(exported):
    ex = exported(4)
    profile = get_profile("stm32f405-qemu")
    node0, node1 = load_int_encoders(ex.directory)[:2]
    with pytest.raises(DeviceError, match=r"runs model [0-9a-f]{16}, expected [0-9a-f]{16}: refusing") as err:
        with deploy_mcu_node(profile, node0, expected_hash=model_hash8(node1)):
            pass
    assert model_hash8(node1).hex() in str(err.value) and model_hash8(node0).hex() in str(err.value)


def test_firmware_build_is_cached_and_reports_footprint(exported):
    enc = load_int_encoders(exported(4).directory)[0]
    profile = get_profile("stm32f405-qemu")
    first, again = build_node_firmware(profile, enc), build_node_firmware(profile, enc)
    assert first == again
    weights = sum(op.weight.size + 4 * op.bias.size for op in enc.ops if hasattr(op, "weight"))
    assert weights < first.flash_bytes < first.flash_capacity
    assert first.ram_bytes < first.ram_capacity and first.max_stack_bytes > 0
