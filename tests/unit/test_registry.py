import pytest

from harness.core.errors import ConfigError
from harness.core.registry import Registry


def test_three_ways_to_register_and_clear_errors():
    reg: Registry = Registry("widget")

    @reg.register("a", "b")
    def f():
        return 1

    class Named:
        name = "c"

    reg.register(Named)

    @reg.register
    class Other:
        name = "d"

    assert reg.get("a") is f and reg.get("b") is f and reg.get("c") is Named and reg.get("d") is Other
    assert reg.names() == ["a", "b", "c", "d"] and "a" in reg
    with pytest.raises(ConfigError, match=r"widget 'a' is already registered"):
        reg.register("a")(lambda: 2)
    with pytest.raises(ConfigError, match=r"unknown widget 'z'; known: a, b, c, d"):
        reg.get("z")
    with pytest.raises(ConfigError, match="already registered"):
        reg.register(Named)  # even the same object: a name is registered once


def test_lookups_from_many_threads_wait_for_the_builtins(tmp_path, monkeypatch):
    """Node targets open in parallel threads: none may see a half-loaded registry."""
    import sys
    import threading
    from concurrent.futures import ThreadPoolExecutor

    (tmp_path / "slow_builtin_widgets.py").write_text(
        "import time\nfrom tests_slow_registry import REG\ntime.sleep(0.3)\nREG.add('socket', object())\n")
    (tmp_path / "tests_slow_registry.py").write_text(
        "from harness.core.registry import Registry\nREG = Registry('widget', None, ('slow_builtin_widgets',))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from tests_slow_registry import REG  # type: ignore[import-not-found]

    start = threading.Barrier(8)

    def look_up(_):
        start.wait()
        return REG.get("socket")

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(look_up, range(8)))
    assert len({id(item) for item in found}) == 1
    for name in ("slow_builtin_widgets", "tests_slow_registry"):
        sys.modules.pop(name, None)
