"""golden == Brevitas == onnxruntime, bit for bit, on 500 real test images: the QCDQ file, and
every configuration the device runner may choose (devices/runner/hil_runner.py), the exact
float32 lowering at every optimization level."""
import numpy as np
import onnxruntime as ort
import pytest

from devices.runner import hil_runner as runner
from quant_models import golden
from quant_models.manifest import load_int_encoders, node_files
from quant_models.packing import pack_codes, payload_bytes, unpack_codes
from quant_models.training import views_as_tensors

SAMPLES = 500


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_golden_brevitas_onnxruntime_agree_bit_for_bit(exported, bits):
    ex = exported(bits)
    data, model, partition = ex.trained.data, ex.trained.cached.model, ex.trained.cached.partition
    images = data.test_x[:SAMPLES]
    pixel_views = partition.views(images)
    float_views = views_as_tensors(partition, images)
    int_encoders = load_int_encoders(ex.directory)
    assert len(int_encoders) == 4
    all_codes = []
    for node, (ienc, enc) in enumerate(zip(int_encoders, model.encoders)):
        golden_codes = golden.encode(ienc, pixel_views[node])
        brevitas_codes = enc.codes(float_views[node]).numpy()
        session = ort.InferenceSession(str(ex.directory / f"node{node}.onnx"),
                                       sess_options=runner.session_options(runner.NODE_CONFIGURATIONS[1], 1))
        ort_values = session.run(None, {"view": float_views[node].numpy()})[0]
        ort_codes = np.round(ort_values / 2.0 ** ienc.code_exponent)
        assert golden_codes.shape == (SAMPLES, 16)
        assert (golden_codes == brevitas_codes).all(), f"node {node}: golden != brevitas"
        assert (golden_codes == ort_codes).all(), f"node {node}: golden != onnxruntime"
        assert golden_codes.max() <= (1 << bits) - 1
        assert len(np.unique(golden_codes)) > 1, f"node {node}: constant codes"
        packed = golden.encode_packed(ienc, pixel_views[node])
        assert packed.shape == (SAMPLES, payload_bytes(16, bits))
        assert (unpack_codes(packed, 16, bits) == golden_codes).all()
        all_codes.append(golden_codes)
    # the head ONNX on golden codes predicts what the torch model predicts
    head = ort.InferenceSession(str(ex.directory / "head.onnx"))
    logits = head.run(None, {"codes": np.concatenate(all_codes, axis=1).astype(np.float32)})[0]
    torch_pred = model(float_views).argmax(1).numpy()
    assert (logits.argmax(1) == torch_pred).all()


def test_manifest_describes_bits_and_hashes(exported):
    man = exported(4).export.manifest
    assert man["bits_per_inference"] == 256 and man["payload_bytes_per_inference"] == 32
    assert man["raw_bits_per_inference"] == 6272
    hashes = {n["sha256"] for n in man["nodes"]}
    assert len(hashes) == 4 and all(len(h) == 64 for h in hashes)
    assert man["nodes"][0]["macs"] == 14 * 14 * 32 * 25 + 32 * 7 * 7 * 16


def test_one_bit_codes_pack_eight_per_byte(exported):
    ex = exported(1)
    ienc = load_int_encoders(ex.directory)[0]
    codes = golden.encode(ienc, ex.trained.cached.partition.views(ex.trained.data.test_x[:50])[0])
    assert set(np.unique(codes)) <= {0, 1}
    assert pack_codes(codes, 1).shape == (50, 2)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_every_runner_configuration_gives_golden_codes(exported, bits):
    ex = exported(bits)
    pixel_views = ex.trained.cached.partition.views(ex.trained.data.test_x[:SAMPLES])
    for node, ienc in enumerate(load_int_encoders(ex.directory)):
        files = node_files(ex.directory, node)
        assert files.exact_onnx is not None and files.check_vectors is not None
        expected = golden.encode(ienc, pixel_views[node])
        for configuration in runner.NODE_CONFIGURATIONS:
            model = runner.Model(str(files.onnx), "node", ienc.code_exponent, threads=1,
                                 exact_path=str(files.exact_onnx), check=runner.load_check(str(files.check_vectors)),
                                 configurations=(configuration,))
            codes, _ = model.infer(pixel_views[node])
            bad = int((codes != expected).any(axis=1).sum())
            assert bad == 0, f"node {node}, {configuration.name}: {bad} of {SAMPLES} views differ"


@pytest.mark.parametrize("level", ["ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"])
def test_the_exact_lowering_gives_golden_codes_at_every_optimization_level(exported, level):
    ex = exported(4)
    pixel_views = ex.trained.cached.partition.views(ex.trained.data.test_x[:SAMPLES])
    configuration = runner.Configuration(f"exact-{level}", "exact", level)
    for node, ienc in enumerate(load_int_encoders(ex.directory)):
        files = node_files(ex.directory, node)
        model = runner.Model(str(files.onnx), "node", ienc.code_exponent, threads=1,
                             exact_path=str(files.exact_onnx), configurations=(configuration,))
        codes, _ = model.infer(pixel_views[node])
        assert (codes == golden.encode(ienc, pixel_views[node])).all(), f"node {node} at {level}"


def test_check_vectors_are_the_golden_codes_of_hard_views(exported):
    ex = exported(2)
    views, codes = runner.load_check(str(node_files(ex.directory, 0).check_vectors))
    ienc = load_int_encoders(ex.directory)[0]
    assert views.dtype == np.uint8 and views.shape == (16, 14, 14)
    assert (views[0] == 0).all() and (views[1] == 255).all()
    assert (codes == golden.encode(ienc, views)).all()
    entry = ex.export.manifest["nodes"][0]
    assert entry["accumulation_bound"] < 2 ** 24 and entry["exact_onnx"] == "node0.exact.onnx"
