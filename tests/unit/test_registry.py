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
