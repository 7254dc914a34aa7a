from harness.store.results import ResultsStore


def _row(run_id, node, sample, code=b"\x01"):
    return {"run_id": run_id, "node": node, "sample": sample, "device": "d", "latency": 1.0, "latency_unit": "us",
            "latency_basis": "b", "host_rtt_s": 0.001, "code": code, "golden_code": code, "bitexact": 1}


def test_rows_are_unique_per_node_and_sample_and_resumable(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    run_id = store.create_run(experiment="e", experiment_hash="h", run_key="k", model_hash="m", samples=3,
                              node_device="d", gateway_device="host", emulated=1)
    assert store.add_inferences([_row(run_id, 0, 0), _row(run_id, 1, 0)]) == 2
    assert store.add_inferences([_row(run_id, 0, 0), _row(run_id, 0, 1)]) == 1  # the repeat is ignored
    assert store.done_samples(run_id) == {0: {0, 1}, 1: {0}}
    assert store.find_resumable("k").run_id == run_id
    store.set_status(run_id, "complete", {"accuracy": 1.0})
    assert store.find_resumable("k") is None
    assert store.run(run_id)["summary"] == {"accuracy": 1.0}
    df = store.inferences(run_id)
    assert list(df["sample"]) == [0, 0, 1] and df.code.iloc[0] == b"\x01"


def test_stored_codes_unpack_one_node_in_sample_order(tmp_path):
    import numpy as np

    from harness.store.results import stored_codes

    store = ResultsStore(tmp_path / "r.sqlite")
    run_id = store.create_run(experiment="e", experiment_hash="h", run_key="k", model_hash="m", samples=2,
                              node_device="d", gateway_device="host", emulated=1)
    # 4-bit codes [1, 2, 3] pack to 0x12 0x30; [15, 0, 4] to 0xf0 0x40
    store.add_inferences([_row(run_id, 0, 1, bytes([0xF0, 0x40])), _row(run_id, 0, 0, bytes([0x12, 0x30])),
                          _row(run_id, 1, 0, b"\x00\x00")])
    inf = store.inferences(run_id)
    assert stored_codes(inf, 0, 3, 4).tolist() == [[1, 2, 3], [15, 0, 4]]
    assert stored_codes(inf, 0, 3, 4, samples=[1]).tolist() == [[15, 0, 4]]
    assert np.array_equal(stored_codes(inf, 0, 3, 4, column="golden_code"), stored_codes(inf, 0, 3, 4))
