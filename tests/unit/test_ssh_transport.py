"""The pure parts of the SSH transport and of runner provisioning: quoting, host-key options,
platform tags and the host's wheel download command."""
from __future__ import annotations

import logging
import shlex
import subprocess
from pathlib import Path

import pytest

from harness.core.errors import DeviceError
from harness.targets.linux.runner_env import DevicePython, RunnerEnvSpec, host_pip_download_command
from harness.transports.ssh import SshConnection, SshEndpoint, command_line

NASTY = ["/opt/my venv/bin/python", "it's", 'say "hi"', "$(rm -rf ~)", "a;b|c&d", "*", "", "new\nline"]


def test_command_line_round_trips_through_a_posix_shell() -> None:
    line = command_line(NASTY)
    assert shlex.split(line) == NASTY
    printed = subprocess.run(["sh", "-c", f"printf '%s\\0' {line}"], capture_output=True, check=True).stdout
    assert printed.split(b"\0")[:-1] == [a.encode() for a in NASTY]


def test_empty_command_is_refused() -> None:
    with pytest.raises(ValueError):
        command_line([])


def test_endpoint_names_device_and_address() -> None:
    ep = SshEndpoint(device="rpi4", host="fe80::1", port=2222, user="pi")
    assert ep.address == "[fe80::1]:2222"
    assert ep.where == "device rpi4 (pi@[fe80::1]:2222)"
    assert SshEndpoint(device="d", host="h", port=22, user="u").known_hosts_path() == Path("~/.ssh/known_hosts").expanduser()


def test_missing_known_hosts_is_a_clear_error(tmp_path) -> None:
    ep = SshEndpoint(device="rpi4", host="raspberrypi.local", port=22, user="pi", known_hosts=tmp_path / "nope")
    with pytest.raises(DeviceError, match=r"device rpi4 \(pi@raspberrypi.local:22\): known_hosts file .*nope "
                                          r"does not exist.*ssh-keyscan -p 22 raspberrypi.local"):
        SshConnection(ep).connect()


def test_missing_key_file_is_a_clear_error(tmp_path) -> None:
    ep = SshEndpoint(device="rpi4", host="h", port=22, user="pi", key=tmp_path / "id_missing")
    with pytest.raises(DeviceError, match="private key .*id_missing does not exist.*'ssh.key'"):
        SshConnection(ep).connect()


def test_bad_pinned_key_is_a_clear_error() -> None:
    ep = SshEndpoint(device="rpi4", host="h", port=22, user="pi", host_key="ssh-ed25519 not-base64!")
    with pytest.raises(DeviceError, match="pinned host key .*'ssh.host_key'.* is not a public key"):
        SshConnection(ep)._known_hosts_option()


def test_turning_verification_off_is_logged_loudly(caplog) -> None:
    ep = SshEndpoint(device="rpi4", host="h", port=22, user="pi", verify_host_key=False)
    with caplog.at_level(logging.WARNING, logger="hilbench.ssh"):
        assert SshConnection(ep)._known_hosts_option() is None
    assert "HOST KEY VERIFICATION IS OFF" in caplog.text and "device rpi4" in caplog.text


def test_platform_tags_cover_the_device_glibc_down_to_manylinux2014() -> None:
    pi = DevicePython(machine="aarch64", python="3.11", implementation="cpython", libc=("glibc", "2.36"))
    tags = pi.platform_tags()
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_28_aarch64" in tags
    assert tags[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"] and len(tags) == 21
    assert pi.key == "cp311-aarch64-glibc2.36"
    with pytest.raises(DeviceError, match="musl.*not glibc"):
        DevicePython("aarch64", "3.11", "cpython", ("musl", "1.2")).platform_tags()


def test_host_wheel_download_targets_the_device(tmp_path) -> None:
    pi = DevicePython(machine="aarch64", python="3.11", implementation="cpython", libc=("glibc", "2.31"))
    command = host_pip_download_command(pi, RunnerEnvSpec(onnxruntime="1.31.1", host_index_url="http://mirror/simple"), tmp_path)
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in command and command[command.index("--python-version") + 1] == "3.11"
    assert command[command.index("-d") + 1] == str(tmp_path)
    platforms = [command[i + 1] for i, a in enumerate(command) if a == "--platform"]
    assert platforms[0] == "manylinux_2_31_aarch64" and platforms[-1] == "manylinux2014_aarch64"
    assert command[-2:] == ["onnxruntime==1.31.1", "numpy"]
    assert command[command.index("--index-url") + 1] == "http://mirror/simple" and "--isolated" in command
