"""Experiment files: what to train and how, validated with errors that name file and field."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.core.datafiles import read_mapping, validate
from harness.core.errors import ConfigError

from .partition import Partition, make_partition

SUPPORTED_BITS = (1, 2, 3, 4, 8)
SCHEMES = ("ours", "fdml", "fdml-scores", "centralized", "autoencoder")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConvLayer(_Strict):
    channels: int = Field(gt=0)
    kernel: int = Field(default=5, gt=0)
    padding: int | None = Field(default=None, ge=0, description="default: kernel // 2 (same size)")

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding is None else self.padding


class FcLayer(_Strict):
    units: int = Field(gt=0)


class LayerSpec(_Strict):
    """One encoder layer: exactly one of ``conv``, ``maxpool`` (window = stride) or ``fc``."""

    conv: ConvLayer | None = None
    maxpool: int | None = Field(default=None, gt=1)
    fc: FcLayer | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "LayerSpec":
        given = [k for k in ("conv", "maxpool", "fc") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a layer is exactly one of conv, maxpool, fc (got {given or 'none'})")
        return self


def _paper_layers() -> list[LayerSpec]:
    return [LayerSpec(conv=ConvLayer(channels=32, kernel=5)), LayerSpec(maxpool=2)]


class EncoderSpec(_Strict):
    """The node encoder's layers before its final FC to k = C/N outputs and the q-bit quantizer."""

    layers: list[LayerSpec] = Field(default_factory=_paper_layers)
    activation_bits: int = Field(default=8, ge=2, le=8, description="bits of hidden activations")


class HeadSpec(_Strict):
    hidden: list[int] = Field(default_factory=lambda: [1024])


class CodeSpec(_Strict):
    values: int = Field(gt=0, description="C: code values per inference, over all nodes")
    bits: Union[int, Literal["float"]] = Field(description="q: bits per code value, or 'float'")

    @field_validator("bits")
    @classmethod
    def _supported(cls, v: int | str) -> int | str:
        if v != "float" and v not in SUPPORTED_BITS:
            raise ValueError(f"q = {v} is not supported; use one of {list(SUPPORTED_BITS)} or 'float'")
        return v

    @property
    def quantized(self) -> bool:
        return self.bits != "float"

    @property
    def bits_per_value(self) -> int:
        """Bits each code value costs on the radio (float32 codes cost 32)."""
        return 32 if self.bits == "float" else int(self.bits)


class TrainingSpec(_Strict):
    epochs: int = Field(default=10, ge=0)
    batch_size: int = Field(default=64, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    seed: int = 0
    train_samples: int | None = Field(default=None, gt=0, description="use only the first N")
    autoencoder_weight: float = Field(default=1.0, ge=0, description="reconstruction loss weight")


class DevicesSpec(_Strict):
    """Where a run executes: one device profile for every node (or one per node) and the gateway
    that runs the head (``host``: onnxruntime on this machine, or a linux device profile)."""

    nodes: Union[str, list[str]] = "stm32f405-qemu"
    gateway: str = "host"

    def node_devices(self, count: int) -> list[str]:
        if isinstance(self.nodes, str):
            return [self.nodes] * count
        if len(self.nodes) != count:
            raise ValueError(f"devices.nodes lists {len(self.nodes)} devices for {count} nodes")
        return list(self.nodes)


class Experiment(_Strict):
    name: str
    description: str = ""
    dataset: str
    partition: str = "quadrants"
    scheme: Literal["ours", "fdml", "fdml-scores", "centralized", "autoencoder"] = "ours"
    code: CodeSpec
    encoder: EncoderSpec = Field(default_factory=EncoderSpec)
    head: HeadSpec = Field(default_factory=HeadSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    devices: DevicesSpec = Field(default_factory=DevicesSpec)
    source: str = Field(default="<memory>", exclude=True)

    def content_hash(self) -> str:
        """Hash of everything that determines the trained model (not name, description, devices)."""
        content = self.model_dump(mode="json", exclude={"name", "description", "source", "devices"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def partition_for(self, image_shape: tuple[int, int], classes: int) -> Partition:
        """The node views of this experiment's images, checked before anything is built: the
        partition spec fits the images, C fits the nodes (:meth:`check_shape`) and the encoder's
        layers leave every view at least one pixel. Errors name the file and field."""
        try:
            partition = make_partition(self.partition, image_shape)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: field 'partition': {exc}") from exc
        self.check_shape(partition.nodes, classes)
        if self.scheme != "centralized":  # the only scheme without node encoders
            for view in sorted({partition.view_shape(node) for node in range(partition.nodes)}):
                self._check_encoder_fits(view)
        return partition

    def _check_encoder_fits(self, view: tuple[int, int]) -> None:
        """The encoder's layers (as :class:`quant_models.model.NodeEncoder` builds them) leave
        a ``view``-sized input at least 1x1."""
        h, w = view
        for i, layer in enumerate(self.encoder.layers):
            if layer.conv is not None:
                h, w = (n + 2 * layer.conv.pad - layer.conv.kernel + 1 for n in (h, w))
            elif layer.maxpool is not None:
                h, w = h // layer.maxpool, w // layer.maxpool
            else:
                h = w = 1  # fc
            if h < 1 or w < 1:
                raise ConfigError(
                    f"{self.source}: field 'encoder.layers': layer {i} "
                    f"({json.dumps(layer.model_dump(exclude_none=True))}) shrinks the {view[0]}x{view[1]} views of "
                    f"partition {self.partition!r} to nothing ({h}x{w}); use fewer pooling layers, smaller "
                    "kernels or more padding, or a coarser partition (field 'partition')")

    def check_shape(self, nodes: int, classes: int) -> None:
        """Checks that need the dataset and partition: C divisible by N, fdml-scores' code length."""
        if self.scheme == "centralized":
            return
        if self.code.values % nodes:
            raise ConfigError(
                f"{self.source}: field 'code.values': C = {self.code.values} is not divisible by "
                f"the {nodes} nodes of partition {self.partition!r}; pick a multiple of {nodes}")
        if self.scheme == "fdml-scores" and self.code.values != nodes * classes:
            raise ConfigError(
                f"{self.source}: field 'code.values': scheme 'fdml-scores' sums per-node class scores, so "
                f"C must be nodes x classes = {nodes * classes} (got {self.code.values}); scheme 'fdml' "
                "takes any C")


STUDY_FIELDS = ("base", "matrix")  # fields only a study file has


def parse_experiment(data: object, source: str = "<memory>") -> Experiment:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an experiment file must be a YAML mapping of fields")
    if study_fields := [key for key in STUDY_FIELDS if key in data]:
        raise ConfigError(f"{source}: this is a study file (it has {', '.join(study_fields)}), not an experiment; "
                          f"run it with `hilbench study {source}`")
    return validate(Experiment, {**data, "source": source}, source)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML file."""
    return parse_experiment(read_mapping(Path(path), "an experiment file"), str(path))
