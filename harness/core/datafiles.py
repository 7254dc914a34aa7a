"""User-facing data files (experiments, device profiles, radio profiles): YAML read and
validated with errors that name the file, the line or the field, and what to do.

Named files (profiles) live one per file in a search path (shipped directory, directories from
an environment variable, a user directory); a name must match its file name and may be
defined once.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Protocol, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from harness.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class NamedFile(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...


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


class FieldError(ValueError):
    """Raised by a model validator for a rule over several fields that one field breaks: the
    message names ``field`` (dotted, relative to the validated model), not the model as a whole."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for arg in get_args(annotation) if (found := _model_in(arg)) is not None), None)


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """The model that validates the value at ``loc`` inside ``model`` (list indices skipped)."""
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info is not None else None
    return model


def _fields(model: type[BaseModel]) -> list[str]:
    return [name for name, info in model.model_fields.items() if not info.exclude]


def _unknown_field(container: type[BaseModel] | None, name: str) -> str:
    """What is wrong with a field ``container`` does not have, and the likely fix."""
    if container is None:
        return "unknown field"
    known = _fields(container)
    close = difflib.get_close_matches(name, known, n=1)
    nested = [f"{outer}.{name}" for outer in known
              if (inner := _model_in(container.model_fields[outer].annotation)) and name in _fields(inner)]
    guess = close[:1] or nested[:1]
    hint = f"; did you mean {guess[0]!r}?" if guess else ""
    return f"unknown field{hint} (the fields here: {', '.join(known)})"


def _explain(err: Any, model: type[BaseModel] | None) -> str:
    """What is wrong with one field and, where pydantic's words do not say it, what to do."""
    kind, loc, given = err["type"], err["loc"], err.get("input")
    if kind == "extra_forbidden":
        return _unknown_field(_model_at(model, loc[:-1]), str(loc[-1]))
    if kind == "missing":
        return "required field missing; add it"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        target = _model_at(model, loc)
        fields = f" with the fields {', '.join(_fields(target))}" if target is not None else ""
        return f"should be a mapping{fields} (got {given!r})"
    message = err["msg"].removeprefix("Value error, ")
    if kind != "value_error" and isinstance(given, (str, int, float)):
        message += f" (got {given!r})"  # pydantic's own type and range errors do not say what they got
    return message


def validation_message(source: str, exc: ValidationError, prefix: str = "",
                       model: type[BaseModel] | None = None) -> str:
    """One line per error: ``source: field 'a.b': what is wrong[; what to do]``. ``model`` (the
    validated class) lets an unknown field's line list the known ones and suggest the likely one."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc += tuple(cause.field.split("."))
        field = ".".join(str(p) for p in (prefix, *loc) if p != "") or "(top level)"
        lines.append(f"{source}: field '{field}': {_explain(err, model)}")
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(source, exc, prefix, model)) from exc


def check_name_matches_file(item: NamedFile, path: Path) -> None:
    if item.name != path.stem:
        raise ConfigError(f"{path}: field 'name': {item.name!r} must match the file name {path.stem!r}")


def search_path(shipped: Path, env_var: str, user: Path) -> list[Path]:
    """Shipped directory, then ``$env_var`` (os.pathsep-separated), then the user directory."""
    extra = [Path(p).expanduser() for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    return [shipped, *extra, user]


@dataclass
class NamedFiles(Generic[N]):
    """What a search path holds: the usable items by name, and the names that cannot be used
    with the reason (a file that does not load, keyed by its file name; a name defined twice)."""

    usable: dict[str, N] = field(default_factory=dict)
    unusable: dict[str, ConfigError] = field(default_factory=dict)


def scan_named(dirs: list[Path], load_one: Callable[[Path], N], what: str) -> NamedFiles[N]:
    """Every ``*.yaml`` in ``dirs``. One broken file makes only its own name unusable, so a bad
    file in a user's directory never stops the others from working."""
    out: NamedFiles[N] = NamedFiles()
    sources: dict[str, list[str]] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.yaml")):
            try:
                item = load_one(path)
            except ConfigError as exc:
                out.unusable.setdefault(path.stem, exc)
                sources.setdefault(path.stem, []).append(str(path))
                continue
            sources.setdefault(item.name, []).append(item.source)
            out.usable.setdefault(item.name, item)
    for name, files in sources.items():
        if len(files) > 1:
            out.usable.pop(name, None)
            out.unusable[name] = ConfigError(f"{what} {name!r} is defined twice: {' and '.join(files)}")
    return out


def load_named(dirs: list[Path], load_one: Callable[[Path], N], what: str) -> dict[str, N]:
    """Every usable ``*.yaml`` item in ``dirs`` by name (see :func:`scan_named` for the rest)."""
    return scan_named(dirs, load_one, what).usable


def find_named(name: str, dirs: list[Path], load_one: Callable[[Path], N], what: str, named_by: str = "") -> N:
    """The item called ``name``; its own file's error if that file is broken or the name is
    defined twice; else an error listing what is known, after ``named_by`` (where the name was
    given: a file's field, an option)."""
    scanned = scan_named(dirs, load_one, what)
    if name in scanned.usable:
        return scanned.usable[name]
    if name in scanned.unusable:
        raise scanned.unusable[name]
    broken = f"; unusable: {', '.join(sorted(scanned.unusable))}" if scanned.unusable else ""
    where = f"{named_by}: " if named_by else ""
    raise ConfigError(f"{where}unknown {what} {name!r}; known: {', '.join(sorted(scanned.usable)) or 'none'}{broken} "
                      f"({what} files are read from {', '.join(str(d) for d in dirs)})")
