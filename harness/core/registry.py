"""One registry type for everything found by name: datasets, schemes, boards, transports,
deployers, launchers, node targets, gateways, radio models, meters.

A name is registered once: a second registration, even of the same object, is a ConfigError
naming both. ``register`` works three ways: ``@REG.register("a", "b")`` files the decorated
object under the given names; ``@REG.register`` (no parentheses) and ``REG.register(obj)`` file
``obj`` under ``obj.name``.

Where things come from, in the order a lookup tries them:
1. objects registered by the module that defines the registry;
2. its *built-in modules* (dotted names), imported on the first lookup that needs them; each
   registers its objects with the decorator, so heavy or optional dependencies are imported only
   when something asks for them and no module registers by being imported somewhere else;
3. the registry's Python entry-point group, for third-party packages: an entry point names the
   object to register under the entry point's name, or a module that registers on import.
"""
from __future__ import annotations

import threading
from importlib import import_module
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Generic, Iterator, TypeVar

from harness.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, entry_point_group: str | None = None,
                 builtin_modules: tuple[str, ...] = ()) -> None:
        self.what = what
        self.entry_point_group = entry_point_group
        self.builtin_modules = builtin_modules
        self._items: dict[str, T] = {}
        self._builtins_loaded = not builtin_modules
        self._entry_points_loaded = entry_point_group is None
        self._loading: set[str] = set()  # what the thread holding the lock is loading
        self._lock = threading.RLock()  # lookups from several threads wait for one loading

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ConfigError(f"{self.what} {name!r} is already registered ({_describe(self._items[name])}); "
                              f"cannot register {_describe(item)} under the same name")
        self._items[name] = item
        return item

    def register(self, *names: Any) -> Any:
        if len(names) == 1 and not isinstance(names[0], str):
            item = names[0]
            self._load_builtins()  # a plug-in may not take a built-in's name
            return self.add(getattr(item, "name"), item)

        def decorate(item: T) -> T:
            for name in names:
                self.add(name, item)
            return item

        return decorate

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        with self._lock:
            if self._builtins_loaded or "builtins" in self._loading:
                return  # loaded meanwhile, or this thread's modules registering through us
            self._loading.add("builtins")
            try:
                for module in self.builtin_modules:
                    import_module(module)
            finally:
                self._loading.discard("builtins")
                self._builtins_loaded = True

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        with self._lock:
            if self._entry_points_loaded or "entry points" in self._loading:
                return
            self._loading.add("entry points")
            try:
                self._add_entry_points()
            finally:
                self._loading.discard("entry points")
                self._entry_points_loaded = True

    def _add_entry_points(self) -> None:
        assert self.entry_point_group is not None
        for ep in entry_points(group=self.entry_point_group):
            try:
                loaded = ep.load()
            except Exception as exc:
                raise ConfigError(f"{self.what} plug-in {ep.name!r} ({ep.value}, entry point group "
                                  f"{self.entry_point_group}) failed to load: {exc}") from exc
            if isinstance(loaded, ModuleType):
                continue  # the module registered what it defines
            if self._items.get(ep.name) is not loaded:
                self.add(ep.name, loaded)

    def _load_all(self) -> None:
        self._load_builtins()
        self._load_entry_points()

    def get(self, name: str) -> T:
        if name not in self._items:
            self._load_builtins()
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.what} {name!r}; known: {', '.join(self.names()) or 'none'}") from None

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._load_all()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _describe(item: object) -> str:
    return f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', type(item).__name__)}"
