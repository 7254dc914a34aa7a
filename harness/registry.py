"""One registry type for everything found by name: datasets, schemes, boards, transports,
deployers, launchers, node targets, gateways, radio models.

A name is registered once: a second registration, even of the same object, is a ConfigError
naming both. ``register``
works three ways: ``@REG.register("a", "b")`` files the decorated object under the given names;
``@REG.register`` (no parentheses) and ``REG.register(obj)`` file ``obj`` under ``obj.name``.
With an entry-point group, plug-ins published by other packages are loaded on the first miss.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from harness.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, entry_point_group: str | None = None):
        self.what = what
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ConfigError(f"{self.what} {name!r} is already registered ({_describe(self._items[name])}); "
                              f"cannot register {_describe(item)} under the same name")
        self._items[name] = item
        return item

    def register(self, *names: Any) -> Any:
        if len(names) == 1 and not isinstance(names[0], str):
            item = names[0]
            return self.add(getattr(item, "name"), item)

        def decorate(item: T) -> T:
            for name in names:
                self.add(name, item)
            return item

        return decorate

    def _load_entry_points(self) -> None:
        if self.entry_point_group is None or self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._items:
                self.add(ep.name, ep.load())

    def get(self, name: str) -> T:
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.what} {name!r}; known: {', '.join(self.names()) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _describe(item: object) -> str:
    return f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', type(item).__name__)}"
