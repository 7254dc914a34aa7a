"""User-facing data files (experiments, device profiles, radio profiles): YAML read and
validated with errors that name the file, the line or the field, and what to do.

Named files (profiles) live one per file in a search path (shipped directory, directories from
an environment variable, a user directory); a name must match its file name and may be
defined once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class NamedFile(Protocol):
    name: str
    source: str


N = TypeVar("N", bound=NamedFile)


def read_mapping(path: Path, what: str) -> dict:
    """The YAML mapping in ``path``; ConfigError for an unreadable file, bad YAML (with its line)
    or a document that is not a mapping."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{at}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a YAML mapping of fields")
    return data


def validation_message(source: str, exc: ValidationError, prefix: str = "") -> str:
    """One line per error: ``source: field 'a.b': what is wrong``."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "") or "(top level)"
        lines.append(f"{source}: field '{field}': {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(source, exc, prefix)) from exc


def check_name_matches_file(item: NamedFile, path: Path) -> None:
    if item.name != path.stem:
        raise ConfigError(f"{path}: field 'name': {item.name!r} must match the file name {path.stem!r}")


def search_path(shipped: Path, env_var: str, user: Path) -> list[Path]:
    """Shipped directory, then ``$env_var`` (os.pathsep-separated), then the user directory."""
    extra = [Path(p).expanduser() for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    return [shipped, *extra, user]


def load_named(dirs: list[Path], load_one: Callable[[Path], N], what: str) -> dict[str, N]:
    """Every ``*.yaml`` in ``dirs`` by name; a name defined twice is an error naming both files."""
    found: dict[str, N] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.yaml")):
            item = load_one(path)
            if item.name in found:
                raise ConfigError(f"{what} {item.name!r} is defined twice: {found[item.name].source} and {path}")
            found[item.name] = item
    return found


def find_named(name: str, dirs: list[Path], load_one: Callable[[Path], N], what: str) -> N:
    found = load_named(dirs, load_one, what)
    if name not in found:
        raise ConfigError(f"unknown {what} {name!r}; known: {', '.join(sorted(found)) or 'none'} "
                          f"({what} files are read from {', '.join(str(d) for d in dirs)})")
    return found[name]
