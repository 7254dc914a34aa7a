"""Linux targets over real SSH: a real sshd on loopback (pi-loopback) and an arm64 Debian under
qemu-user in a network namespace (rpi4-qemu), real onnxruntime on the device side, real test
images, compared with the golden model bit for bit; and LSTM nodes, whose integer model the
device runs in numpy (a random but valid integer LSTM, exported as the exporter writes one)."""
from __future__ import annotations

import math
import os
import re
import shutil
import socket
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from harness.emulators.arm64 import EMULATION_LABEL, build_rootfs, rootfs_ready
from harness.emulators.sshd import free_port, generate_key
from harness.core.errors import DeviceError
from harness.targets.contract import open_node_target
from harness.targets.linux.deploy import LinuxAccess, deploy_linux_node, deploy_linux_target, linux_device
from harness.config.profiles import get_profile
from harness.core.paths import INT_LSTM_RUNNER_SOURCE
from harness.targets.linux.runner_env import RunnerEnvSpec, ensure_runner_env
from harness.targets.linux.runner_files import runner_files
from harness.transports.ssh import SshConnection
from quant_models import golden
from quant_models.intlstm import IntLstmEncoder
from quant_models.manifest import CHECK_VECTORS, load_int_encoders, load_manifest, node_files
from tests.unit.test_intlstm import random_encoder
from tests.unit.test_runner_int_lstm import write_lstm_export

SAMPLES = 200
QEMU_SAMPLES = 50
LSTM_WINDOWS = 100
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3, with the venv module (python3-venv)


@pytest.fixture(scope="module")
def loopback() -> LinuxAccess:
    """One pi-loopback device (a real sshd on 127.0.0.1) shared by this module's tests."""
    with linux_device(get_profile("pi-loopback")) as access:
        yield access


@pytest.fixture(scope="module")
def model(exported):
    """The q = 4 paper-shaped model: export dir, manifest, integer encoders, real test views."""
    ex = exported(4)
    views = ex.trained.cached.partition.views(ex.trained.data.test_x[:SAMPLES])
    return ex.directory, ex.export.manifest, load_int_encoders(ex.directory), views


def _node(directory: Path, i: int) -> dict:
    """deploy_linux_target's node arguments from the export: exponent, shape, exact model, check."""
    n = load_manifest(directory)["nodes"][i]
    files = node_files(directory, i)
    return {"code_exponent": n["code_exponent"], "view_shape": tuple(n["view_shape"]),
            "exact_model_path": files.exact_onnx, "check_path": files.check_vectors}


def _runner_directories(listing: str) -> dict[str, frozenset[str]]:
    """``ls -R`` output of the runner directory: the files in each content-addressed directory."""
    return {m.group(1): frozenset(m.group(2).split()) - {"__pycache__"}
            for m in re.finditer(r"/runner/([0-9a-f]{16}):\n((?:.+\n?)*)", listing)}


def test_pi_loopback_nodes_return_golden_codes_bit_for_bit(model, loopback) -> None:
    directory, manifest, encoders, views = model
    profile = get_profile("pi-loopback")
    with ExitStack() as stack:  # four node targets, one device: each its own runner session
        targets = [stack.enter_context(deploy_linux_target(profile, directory / f"node{i}.onnx", "node",
                                                           batch_size=64, access=loopback, **_node(directory, i)))
                   for i in range(len(encoders))]
        results = [t.encode(views[i]) for i, t in enumerate(targets)]
        info = targets[0].info()
        configuration = targets[0].configuration
    assert configuration["configuration"]["name"] == "exact-float"
    assert configuration["self_check"] == {"vectors": 16, "fallback": False,
                                           "tried": [{"configuration": "exact-float", "mismatched_codes": 0}]}
    assert configuration["batching"]["batch_calls"] is True  # checked on 256 views run in calls of 64
    assert configuration["batching"]["checked_batch"] == {"views": 256, "mismatched_codes": 0}
    assert isinstance(configuration["cpu_flags"], list)
    for i, (enc, result) in enumerate(zip(encoders, results)):
        expected = golden.encode(enc, views[i])
        bad = np.flatnonzero((result.codes != expected).any(axis=1))
        assert bad.size == 0, f"node {i}: {bad.size} of {SAMPLES} codes differ from golden"
        assert (result.packed(enc.code_bits) == golden.encode_packed(enc, views[i])).all()
        assert result.device_ns.shape == (SAMPLES,) and (result.device_ns > 0).all()
        assert result.round_trip_s.shape == (math.ceil(SAMPLES / 64),)
        # each batch ran in batch calls, timed as a whole: its views share the batch time
        assert result.timed_together.tolist() == [64] * 192 + [8] * 8 and "batch time / views" in result.timing
        for b, rtt in enumerate(result.round_trip_s):  # a batch's round trip includes its device time
            assert rtt * 1e9 > result.device_ns[b * 64:(b + 1) * 64].sum()
    assert info.emulated and "not a Raspberry Pi's speed" in info.timing_basis
    assert info.inferences == SAMPLES and info.peak_rss_bytes > 10 * 2**20 and info.cpu_ns > 0
    assert info.cpu_model not in ("", "unknown") and info.governor and info.onnxruntime == ort.__version__


def test_views_stored_on_the_device_encode_in_ranges_bit_for_bit(model, loopback) -> None:
    """store() then encode_stored(): the same codes and timings as encode(), each request a range
    of STORED_REQUEST_BATCHES batches, so round trips are per request."""
    from harness.targets.linux.driver import STORED_REQUEST_BATCHES

    directory, manifest, encoders, views = model
    with deploy_linux_target(get_profile("pi-loopback"), directory / "node1.onnx", "node", batch_size=8,
                             access=loopback, **_node(directory, 1)) as target:
        with pytest.raises(DeviceError, match=r"no stored views \(call store\(\) first\)"):
            target.encode_stored()
        assert target.store(views[1]) == SAMPLES
        whole = target.encode_stored()
        part = target.encode_stored(37, 50)
        with pytest.raises(DeviceError, match=r"stored views \[190, 215\) asked for, 200 are stored"):
            target.encode_stored(190, 25)
        assert target.store(views[1][:10]) == 10  # replaces the views stored before
        replaced = target.encode_stored()
        info = target.info()
    expected = golden.encode(encoders[1], views[1])
    assert (whole.codes == expected).all() and (part.codes == expected[37:87]).all()
    assert (replaced.codes == expected[:10]).all()
    assert whole.timed_together.tolist() == [8] * SAMPLES and (whole.device_ns > 0).all()
    assert part.timed_together.tolist() == [8] * 48 + [2, 2]  # batches of 8 from view 37: the last has 2
    per_request = 8 * STORED_REQUEST_BATCHES
    assert whole.round_trip_s.shape == (math.ceil(SAMPLES / per_request),)
    for r, rtt in enumerate(whole.round_trip_s):  # a request's round trip includes its device time
        assert rtt * 1e9 > whole.device_ns[r * per_request:(r + 1) * per_request].sum()
    assert info.inferences == SAMPLES + 50 + 10


def test_pi_loopback_gateway_predicts_like_local_onnxruntime(model, loopback) -> None:
    directory, manifest, encoders, views = model
    codes = np.concatenate([golden.encode(enc, views[i]) for i, enc in enumerate(encoders)], axis=1)
    local = ort.InferenceSession(str(directory / "head.onnx")).run(None, {"codes": codes.astype(np.float32)})[0]
    with deploy_linux_target(get_profile("pi-loopback"), directory / "head.onnx", "gateway", access=loopback) as gateway:
        result = gateway.classify(codes)
        with pytest.raises(DeviceError, match="runs the head .*encode\\(\\) needs a node"):
            gateway.encode(views[0])
        wrong_width = np.zeros((3 * gateway.batch_size, codes.shape[1] + 1), np.uint8)  # three refused batches
        with pytest.raises(DeviceError, match="the runner refused a batch: model input 'codes' has shape"):
            gateway.classify(wrong_width)
        again = gateway.classify(codes[:5])  # every refusal was read: the session is still in step
    assert (result.predictions == local.argmax(axis=1)).all()
    np.testing.assert_allclose(result.logits, local, rtol=1e-5, atol=1e-5)
    assert result.device_ns.shape == (SAMPLES,) and len(result.round_trip_s) == 1
    np.testing.assert_array_equal(again.logits, result.logits[:5])


def test_paths_with_spaces_and_quotes_work(model, loopback, tmp_path) -> None:
    directory, manifest, encoders, views = model
    local = tmp_path / "my models" / "node 0 \"v1\" it's.onnx"
    local.parent.mkdir()
    shutil.copy(directory / "node0.onnx", local)
    workdir = f"{loopback.workdir}/hil bench/it's \"quoted\" $(touch pwned); ls"
    with deploy_linux_target(get_profile("pi-loopback"), local, "node", access=replace(loopback, workdir=workdir),
                             **_node(directory, 0)) as target:
        result = target.encode(views[0][:20])
        listing = target.connection.run(["ls", "-R", f"{workdir}/models", f"{workdir}/runner"]).stdout
    assert (result.codes == golden.encode(encoders[0], views[0][:20])).all()
    assert re.search(r"model-[0-9a-f]{16}\.onnx", listing)
    assert set(_runner_directories(listing).values()) == {frozenset({"hil_runner.py"})}  # ONNX: no hil_int_lstm
    assert not Path(loopback.workdir, "pwned").exists() and not Path.home().joinpath("pwned").exists()


def test_mismatched_host_key_is_refused(loopback, tmp_path) -> None:
    ep = loopback.endpoint
    impostor = generate_key(tmp_path / "impostor", "not the device").split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{ep.port} {impostor[0]} {impostor[1]}\n")
    where = re.escape(f"device pi-loopback ({ep.user}@127.0.0.1:{ep.port})")
    with pytest.raises(DeviceError, match=f"{where}: host key verification failed: the key the host presented "
                                          r"\(SHA256:.+\) is not the one known_hosts file .* lists.*Refusing"):
        SshConnection(replace(ep, known_hosts=known_hosts)).connect()
    # the same with a pinned key: the device's own key is accepted, another one refused
    device_key = " ".join(ep.known_hosts.read_text().split()[1:3])
    with SshConnection(replace(ep, known_hosts=known_hosts, host_key=device_key)) as conn:
        assert conn.run(["echo", "ok"]).stdout == "ok\n"
    with pytest.raises(DeviceError, match="host key verification failed.*the key pinned in the profile"):
        SshConnection(replace(ep, host_key=" ".join(impostor[:2]))).connect()


def test_connection_refused_is_a_clear_error(loopback) -> None:
    port = free_port()
    where = re.escape(f"device pi-loopback ({loopback.endpoint.user}@127.0.0.1:{port})")
    with pytest.raises(DeviceError, match=f"{where}: connection refused: nothing listens on port {port}"):
        SshConnection(replace(loopback.endpoint, port=port)).connect()


def test_a_server_that_never_speaks_ssh_times_out_clearly(loopback) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        where = re.escape(f"device pi-loopback ({loopback.endpoint.user}@127.0.0.1:{port})")
        started = time.monotonic()
        with pytest.raises(DeviceError, match=f"{where}: timed out after 1 s .*SSH handshake"):
            SshConnection(replace(loopback.endpoint, port=port, connect_timeout_s=1.0)).connect()
        assert time.monotonic() - started < 10


def test_runner_that_cannot_load_its_model_reports_remote_stderr(loopback, tmp_path) -> None:
    corrupt = tmp_path / "node0.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not an ONNX model")
    with pytest.raises(DeviceError) as err:
        with deploy_linux_target(get_profile("pi-loopback"), corrupt, "gateway", access=loopback):
            pass
    message = str(err.value)
    assert message.startswith("device pi-loopback") and "the runner failed to start (exit status 1)" in message
    assert "its stderr:\nhil_runner: error: cannot load model" in message and "INVALID_PROTOBUF" in message


def test_runner_without_onnxruntime_reports_remote_stderr(model, loopback) -> None:
    directory, manifest, _, _ = model
    without = replace(loopback, python=SYSTEM_PYTHON)  # Debian's python3 has no onnxruntime
    with pytest.raises(DeviceError, match="(?s)runner failed to start.*its stderr:.*No module named"):
        with deploy_linux_target(get_profile("pi-loopback"), directory / "node0.onnx", "node", access=without,
                                 **_node(directory, 0)):
            pass


def test_runner_killed_mid_session_reports_exit(model, loopback) -> None:
    directory, manifest, encoders, views = model
    with deploy_linux_target(get_profile("pi-loopback"), directory / "node0.onnx", "node", access=loopback,
                             **_node(directory, 0)) as target:
        target.encode(views[0][:5])
        target.connection.run(["kill", "-KILL", str(target.hello["pid"])])
        with pytest.raises(DeviceError, match=r"device pi-loopback .*hil_runner.* was killed \(signal KILL\) "
                                              r"instead of sending a reply; its stderr"):
            target.encode(views[0][:5])


def test_offline_device_gets_its_venv_from_wheels_the_host_uploads(model, loopback, tmp_path) -> None:
    """The code path of a real Pi without a usable package index: the runner's venv is made
    with the device's python, the device's pip fails, so the host downloads the device's wheels
    (cached outside the repo) and uploads them. Without those wheels either, the error says
    what failed and how to fix it. A second deployment finds the venv ready."""
    directory, manifest, encoders, views = model
    dead_index = f"http://127.0.0.1:{free_port()}/simple"
    env = RunnerEnvSpec(python=SYSTEM_PYTHON, venv=f"{loopback.workdir}/venv", device_index_url=dead_index,
                        remote_wheel_dir=f"{loopback.workdir}/wheels")
    with SshConnection(loopback.endpoint) as conn:
        no_wheels = replace(env, host_index_url=dead_index, wheel_dir=tmp_path / "no wheels")
        with pytest.raises(DeviceError, match=(
                rf"(?s)device pi-loopback .*cannot install the runner's packages \(onnxruntime==.* numpy\).*"
                rf"1\) pip install from {re.escape(dead_index)} failed:.*"
                r"2\) installing wheels uploaded from the host \(.*no wheels\) failed:.*pip download.*"
                r"Fix either: .*pip download --disable-pip-version-check")):
            ensure_runner_env(conn, no_wheels)
    offline = replace(loopback, python=None, env=env)
    with deploy_linux_target(get_profile("pi-loopback"), directory / "node0.onnx", "node", access=offline,
                             **_node(directory, 0)) as target:
        assert target.hello["executable"] == f"{loopback.workdir}/venv/bin/python"
        assert (target.encode(views[0][:20]).codes == golden.encode(encoders[0], views[0][:20])).all()
        wheels = target.connection.run(["ls", env.remote_wheel_dir]).stdout
    assert f"onnxruntime-{ort.__version__}-" in wheels and "numpy-" in wheels
    started = time.monotonic()
    with SshConnection(loopback.endpoint) as conn:
        assert ensure_runner_env(conn, env) == env.venv_python
    assert time.monotonic() - started < 5


# ---- LSTM nodes: the integer model in numpy on the device ----------------------------------

@pytest.fixture(scope="module")
def lstm_export(tmp_path_factory) -> tuple[Path, IntLstmEncoder, np.ndarray]:
    """An export directory holding one quantized LSTM node as the exporter writes it (integer
    parameters, check vectors, manifest entry, no ONNX), and int8 windows for it."""
    rng = np.random.default_rng(17)
    # a code grid fine enough for random weights' small final h: codes that differ from window to window
    encoder = replace(random_encoder(rng, 2, [12, 5], 16, 4), code_exponent=-6)
    directory = tmp_path_factory.mktemp("lstm-export")
    write_lstm_export(directory, encoder, rng)
    shape = encoder.input_shape
    windows = rng.integers(-128, 128, (LSTM_WINDOWS, *shape)).astype(np.int8)
    assert len(np.unique(golden.encode(encoder, windows), axis=0)) > 10  # codes that can tell a wrong model
    return directory, encoder, windows


def test_pi_loopback_lstm_node_runs_the_integer_model_bit_for_bit(lstm_export, loopback) -> None:
    directory, encoder, windows = lstm_export
    files = runner_files(directory, encoder)
    assert files.kind == "int-lstm" and files.model.name == "node0.int.json"
    with deploy_linux_node(get_profile("pi-loopback"), files, batch_size=32, access=loopback) as target:
        result = target.encode(windows)
        target.store(windows)
        stored = target.encode_stored()
        configuration, hello = target.configuration, target.hello
        listing = target.connection.run(["ls", "-R", f"{loopback.workdir}/runner"]).stdout
    assert configuration["configuration"]["name"] == "int-lstm-numpy"
    assert "numpy on the device; onnxruntime cannot run" in configuration["configuration"]["description"]
    assert configuration["self_check"] == {"vectors": CHECK_VECTORS, "fallback": False,
                                           "tried": [{"configuration": "int-lstm-numpy", "mismatched_codes": 0}]}
    assert hello["kind"] == "int-lstm" and hello["input_shape"] == [None, 2, 16]
    assert (result.codes == golden.encode(encoder, windows)).all()
    assert (result.packed(encoder.code_bits) == golden.encode_packed(encoder, windows)).all()
    assert result.timed_together.tolist() == [32] * 96 + [4] * 4 and (result.device_ns > 0).all()
    assert (stored.codes == result.codes).all() and (stored.timed_together == result.timed_together).all()
    assert {"hil_runner.py", "hil_int_lstm.py"} in [set(files) for files in _runner_directories(listing).values()]
    with deploy_linux_node(get_profile("pi-loopback"), files, access=loopback) as target:
        with pytest.raises(DeviceError, match=r"windows must be int8 \[B, h, w\], got uint8"):
            target.encode(windows.view(np.uint8))


def test_run_engine_lstm_node_on_pi_loopback_is_timed_per_view_and_says_numpy(lstm_export) -> None:
    """The route a run takes: the node target registered for kind linux, given the NodeModel."""
    directory, encoder, windows = lstm_export
    with open_node_target(get_profile("pi-loopback"), encoder, directory) as node:
        replies = node.infer_batch(windows[:10])
        extra = node.info.extra
    assert [r.code for r in replies] == [bytes(p) for p in golden.encode_packed(encoder, windows[:10])]
    assert all(r.latency > 0 and r.latency_unit == "us" for r in replies)
    assert "integer LSTM in numpy on the device" in replies[0].latency_basis
    assert extra["configuration"]["name"] == "int-lstm-numpy" and extra["self_check"]["vectors"] == CHECK_VECTORS


def test_a_changed_device_lstm_module_is_a_new_runner_directory(lstm_export, loopback, tmp_path, monkeypatch) -> None:
    """The runner's directory is named by the digest of all its sources: a device never runs an
    old hil_int_lstm.py next to a new runner (or the reverse)."""
    from harness.targets.linux import driver

    directory, encoder, windows = lstm_export
    changed = tmp_path / "hil_int_lstm.py"
    changed.write_text(INT_LSTM_RUNNER_SOURCE.read_text() + "\n# another version\n")
    files = runner_files(directory, encoder)
    with deploy_linux_node(get_profile("pi-loopback"), files, access=loopback) as target:
        first = set(target.connection.run(["ls", f"{loopback.workdir}/runner"]).stdout.split())
    monkeypatch.setitem(driver.RUNNER_FILES, "int-lstm", (driver.RUNNER_SOURCE, changed))
    with deploy_linux_node(get_profile("pi-loopback"), files, access=loopback) as target:
        assert (target.encode(windows[:5]).codes == golden.encode(encoder, windows[:5])).all()
        second = set(target.connection.run(["ls", f"{loopback.workdir}/runner"]).stdout.split())
    assert first < second


# ---- rpi4-qemu: arm64 under qemu-user -----------------------------------------------------

@pytest.fixture(scope="module")
def arm64_rootfs() -> None:
    """The arm64 root filesystem, built by scripts/build-arm64-rootfs.sh if missing (once per
    machine: ~7 minutes; the CI's first run pays it)."""
    if os.geteuid() != 0:
        pytest.skip("rpi4-qemu needs root (network namespace, chroot, binfmt_misc)")
    if not rootfs_ready():
        build_rootfs()


def test_rpi4_qemu_nodes_return_golden_codes_bit_for_bit(model, lstm_export, arm64_rootfs) -> None:
    """A CNN node in onnxruntime and an LSTM node in numpy on one emulated arm64 device."""
    directory, manifest, encoders, views = model
    lstm_directory, lstm_encoder, windows = lstm_export
    node = 1
    profile = get_profile("rpi4-qemu")
    with linux_device(profile) as access:
        with deploy_linux_target(profile, directory / f"node{node}.onnx", "node", batch_size=25, access=access,
                                 **_node(directory, node)) as target:
            result = target.encode(views[node][:QEMU_SAMPLES])
            info = target.info()
            checked = target.configuration["self_check"]
        with deploy_linux_node(profile, runner_files(lstm_directory, lstm_encoder), batch_size=25,
                               access=access) as lstm_target:
            lstm_result = lstm_target.encode(windows[:QEMU_SAMPLES])
            lstm_configuration = lstm_target.configuration
    assert checked["tried"] == [{"configuration": "exact-float", "mismatched_codes": 0}], checked
    expected = golden.encode(encoders[node], views[node][:QEMU_SAMPLES])
    bad = np.flatnonzero((result.codes != expected).any(axis=1))
    assert bad.size == 0, f"rpi4-qemu node {node}: {bad.size} of {QEMU_SAMPLES} codes differ from golden"
    assert info.machine == "aarch64" and "Cortex-A72" in info.cpu_model and "emulated" in info.cpu_model
    assert info.timing_basis == EMULATION_LABEL and "not a Raspberry Pi's speed" in info.timing_basis
    assert info.emulated and info.onnxruntime == ort.__version__ and (result.device_ns > 0).all()
    assert lstm_configuration["self_check"]["tried"] == [{"configuration": "int-lstm-numpy", "mismatched_codes": 0}]
    lstm_bad = np.flatnonzero((lstm_result.codes != golden.encode(lstm_encoder, windows[:QEMU_SAMPLES])).any(axis=1))
    assert lstm_bad.size == 0, f"rpi4-qemu LSTM node: {lstm_bad.size} of {QEMU_SAMPLES} codes differ from golden"
