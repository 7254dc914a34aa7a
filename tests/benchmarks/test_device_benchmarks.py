"""Device benchmarks, recorded in the results database; run them on a device with e.g.

    .venv/bin/python -m pytest tests/benchmarks --hil-device stm32f405-qemu --hil-samples 200

They assert correctness (device codes == golden), never speed: the figures are recorded.
"""
import pytest

pytestmark = pytest.mark.hil_hardware


def test_encoder_run_is_bit_exact_and_recorded(hil_run, hil_store):
    summary = hil_run()
    assert summary["bitexact_rate"] == 1.0
    assert summary["accuracy"] == summary["golden_accuracy"]
    assert summary["run_id"] in set(hil_store.runs().run_id)


def test_node_answers_and_reports_its_footprint(hil_target):
    import numpy as np

    reply = hil_target.infer(np.zeros(hil_target.encoder.input_shape, np.uint8))
    assert len(reply.code) == (hil_target.encoder.code_len * hil_target.encoder.code_bits + 7) // 8
    assert reply.latency > 0 and reply.latency_basis
