"""Real generated encoders in firmware on emulated Cortex-M boards, against the golden model."""
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np
import pytest

from harness.targets.mcu.deploy import build_node_firmware, deploy_mcu_node, model_hash8
from harness.core.errors import DeviceError
from harness.config.profiles import get_profile
from quant_models import golden
from quant_models.manifest import load_int_encoders

SAMPLES = 200


@pytest.mark.parametrize("device", ["stm32f405-qemu", "mps2-an386-qemu"])
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

        def run(i):
            return [nodes[i].target.infer(v.tobytes()) for v in views[i]]

        with ThreadPoolExecutor(len(nodes)) as pool:
            results = list(pool.map(run, range(len(nodes))))
    for i, (enc, node_results) in enumerate(zip(encoders, results)):
        got = np.array([np.frombuffer(r.code, np.uint8) for r in node_results])
        expected = golden.encode_packed(enc, views[i])
        bad = np.flatnonzero((got != expected).any(axis=1))
        assert bad.size == 0, f"{device} node {i}: {bad.size} of {SAMPLES} codes differ from golden"
        work = nodes[i].target.work(node_results[0].ticks)
        assert work.unit == "instructions" and work.emulated and work.microseconds is None
        assert work.count > enc.macs  # at least one instruction per MAC


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
