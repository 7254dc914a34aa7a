import pytest

from harness.core.errors import ConfigError
from harness.config.profiles import get_profile, load_profile, load_profiles, scan_profiles

GOOD = "name: {name}\nkind: mcu\nemulated: true\nboard: netduinoplus2\ndeploy: {{method: qemu}}\n"


def test_shipped_profiles_are_valid():
    profiles = load_profiles()
    assert {"stm32f405-qemu", "mps2-an386-qemu", "nucleo-f446re", "host-onnxruntime"} <= profiles.keys()
    assert profiles["stm32f405-qemu"].board_description.flash.size == 1024 * 1024
    assert profiles["nucleo-f446re"].emulated is False


def test_user_directory_adds_a_device_without_code(tmp_path, monkeypatch):
    (tmp_path / "my-board.yaml").write_text(GOOD.format(name="my-board"))
    monkeypatch.setenv("HILBENCH_PROFILE_DIRS", str(tmp_path))
    assert get_profile("my-board").board == "netduinoplus2"


@pytest.mark.parametrize("text, message", [
    (GOOD.format(name="p").replace("netduinoplus2", "nosuchboard"), r"field 'board': unknown board 'nosuchboard'; known: .*netduinoplus2"),
    (GOOD.format(name="p").replace("kind: mcu", "kind: toaster"), r"field 'kind'"),
    (GOOD.format(name="p").replace("emulated: true", "emulated: false"), r"field 'transport.url': a real mcu needs 'transport.url'"),
    (GOOD.format(name="p") + "colour: red\n", r"field 'colour': unknown field.*the fields here: name, kind"),
    (GOOD.format(name="p").replace("method: qemu", "method: command"), r"field 'deploy.command': method 'command' needs 'command'"),
    (GOOD.format(name="other"), r"field 'name': 'other' must match the file name 'p'"),
    ("name: p\nkind: [\n", r"malformed YAML at line"),
])
def test_bad_profiles_name_file_and_field(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_profile(path)
    assert str(path) in str(err.value)


def test_duplicate_names_across_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for d in (a, b):
        (d / "dup.yaml").write_text(GOOD.format(name="dup"))
    (a / "other.yaml").write_text(GOOD.format(name="other"))
    assert set(load_profiles([a, b])) == {"other"}
    with pytest.raises(ConfigError, match="defined twice") as err:
        get_profile("dup", [a, b])
    assert str(a / "dup.yaml") in str(err.value) and str(b / "dup.yaml") in str(err.value)


def test_a_broken_file_makes_only_its_own_profile_unusable(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD.format(name="good"))
    (tmp_path / "bad.yaml").write_text("name: bad\nkind: [\n")
    assert get_profile("good", [tmp_path]).name == "good"
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line"):
        get_profile("bad", [tmp_path])
    with pytest.raises(ConfigError, match=r"unknown device 'nosuch'; known: good; unusable: bad"):
        get_profile("nosuch", [tmp_path])
    scanned = scan_profiles([tmp_path])
    assert set(scanned.usable) == {"good"} and "malformed YAML" in str(scanned.unusable["bad"])
