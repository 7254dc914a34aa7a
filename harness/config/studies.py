"""Study files: a base experiment and a matrix of overrides, expanded into validated points.

```yaml
name: smoke-study
base: ../smoke.yaml            # an experiment file, relative to this file (or `experiment:` inline)
matrix:
  product:                     # every combination of these
    code.bits: [2, 4]
    code.values: [32, 64]
  zip:                         # varied together, index by index (all lists of one length)
    scheme: [ours, fdml]
    training.seed: [0, 1]
exclude:                       # points matching every field given here are left out
  - {code.bits: 2, code.values: 32}
include:                       # extra points, after the matrix's (any fields)
  - {scheme: centralized, code.values: 784, code.bits: 8}
run:                           # how device points run
  nodes_device: stm32f405-qemu
  gateway: host
  samples: 200
```

Keys of ``product`` and ``zip`` are dotted paths into the experiment (``code.values``,
``encoder.layers``, ``training.seed``, ``devices.nodes``, ...); a ``null`` value keeps the base
experiment's. Every point is validated as an experiment of its own; errors name the study file,
the point and the field.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.core.datafiles import FieldError, read_mapping, validate
from harness.core.errors import ConfigError
from quant_models.experiment import Experiment, parse_experiment


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatrixSpec(_Strict):
    product: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "MatrixSpec":
        for kind, entries in (("product", self.product), ("zip", self.zip)):
            for key, values in entries.items():
                if not values:
                    raise FieldError(f"{kind}.{key}", "has no values; give at least one, or leave the field out")
        lengths = {key: len(values) for key, values in self.zip.items()}
        if len(set(lengths.values())) > 1:
            raise FieldError("zip", f"zip fields vary together, so their lists need one length (got {lengths}); "
                             "fields varied independently go under 'product'")
        both = set(self.product) & set(self.zip)
        if both:
            raise FieldError("zip", f"fields both in product and zip: {sorted(both)}; keep each in one of them")
        return self


class StudyRunSpec(_Strict):
    """How the device points run (host-only points ignore it)."""

    nodes_device: str | None = Field(default=None, description="default: each point's experiment's devices")
    gateway: str | None = None
    samples: int | None = Field(default=None, ge=1, description="device samples per point (default: all)")


class StudyFile(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    base: str | None = Field(default=None, description="experiment file, relative to the study file")
    experiment: dict[str, Any] | None = Field(default=None, description="the base experiment inline")
    matrix: MatrixSpec = Field(default_factory=MatrixSpec)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    include: list[dict[str, Any]] = Field(default_factory=list)
    run: StudyRunSpec = Field(default_factory=StudyRunSpec)

    @model_validator(mode="after")
    def _one_base(self) -> "StudyFile":
        if (self.base is None) == (self.experiment is None):
            raise FieldError("base", "give the base experiment either as 'base' (a file) or as 'experiment' (inline)")
        varied = set(self.matrix.product) | set(self.matrix.zip)
        for i, rule in enumerate(self.exclude):
            unknown = set(rule) - varied
            if unknown:
                raise FieldError(f"exclude.{i}", f"names fields the matrix does not vary: {sorted(unknown)}; an "
                                 "exclude rule matches fields under 'matrix' (extra points go under 'include')")
        return self


@dataclass(frozen=True)
class Point:
    """One configuration of a study: the overrides it applies and the experiment they give."""

    label: str
    overrides: dict[str, Any]
    experiment: Experiment


@dataclass(frozen=True)
class Study:
    name: str
    source: str
    description: str
    points: list[Point]
    run: StudyRunSpec
    varied: list[str]


def set_dotted(data: dict[str, Any], path: str, value: Any) -> None:
    """``data`` with ``a.b.c`` set to ``value``, creating the mappings on the way."""
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"field {path!r}: {key!r} is not a mapping of fields")
        node = child
    node[keys[-1]] = value


def label_of(overrides: dict[str, Any]) -> str:
    """A point's readable name: ``code.bits=4,code.values=64``."""
    return ",".join(f"{key}={json.dumps(value, separators=(',', ':')) if isinstance(value, (dict, list)) else value}"
                    for key, value in overrides.items()) or "base"


def expand(matrix: MatrixSpec, exclude: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The override sets: the product of ``product`` fields times the ``zip`` rows, in file order,
    without the excluded ones."""
    keys = list(matrix.product)
    zipped = [dict(zip(matrix.zip, row)) for row in zip(*matrix.zip.values())] or [{}]
    points = []
    for combination in itertools.product(*matrix.product.values()):
        for row in zipped:
            point = dict(zip(keys, combination)) | row
            if not any(all(point.get(k) == v for k, v in rule.items()) for rule in exclude):
                points.append(point)
    return points


def load_study(path: str | Path) -> Study:
    """Read and validate a study file and every point it makes."""
    path = Path(path)
    data = read_mapping(path, "a study file")
    if "dataset" in data and not {"base", "experiment", "matrix"} & set(data):
        raise ConfigError(f"{path}: this is an experiment file, not a study (it has no base, experiment or matrix); "
                          f"run it with `hilbench run {path}`")
    spec = validate(StudyFile, data, str(path))
    if spec.base is not None:
        base_path = (path.parent / spec.base).resolve()
        try:
            base = read_mapping(base_path, "an experiment file")
        except ConfigError as exc:
            raise ConfigError(f"{path}: field 'base': {exc}") from exc
        base_source = str(base_path)
    else:
        base, base_source = dict(spec.experiment or {}), f"{path} field 'experiment'"
    parse_experiment(base, base_source)  # the base alone must be valid
    points = []
    for point in expand(spec.matrix, spec.exclude) + [dict(extra) for extra in spec.include]:
        overrides = {key: value for key, value in point.items() if value is not None}  # null: the base's
        label = label_of(overrides)
        data = json.loads(json.dumps(base))  # a deep copy
        for key, value in overrides.items():
            try:
                set_dotted(data, key, value)
            except ConfigError as exc:
                raise ConfigError(f"{path}: point {label}: {exc}") from exc
        data["name"] = f"{spec.name}[{label}]"
        points.append(Point(label, overrides, parse_experiment(data, f"{path} point {label}")))
    if not points:
        raise ConfigError(f"{path}: the matrix and its excludes leave no point to run")
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: field 'matrix': some points are the same configuration")
    varied = list(spec.matrix.product) + list(spec.matrix.zip)
    varied += [key for extra in spec.include for key in extra if key not in varied]
    return Study(spec.name, str(path), spec.description, points, spec.run, varied=list(dict.fromkeys(varied)))
