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
from .series import is_series_dataset

SUPPORTED_BITS = (1, 2, 3, 4, 8)
LSTM_CODE_BITS = (2, 3, 4, 8, "float")
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
    """The node encoder. A CNN: ``layers`` before its final FC to k = C/N outputs and the q-bit
    quantizer. Or, for time series, ``lstm``: the state sizes of stacked LSTMs (the paper's
    ``[40, 9]``); the last one's final hidden state, quantized to q bits, is the node's code, so
    k = the last size."""

    layers: list[LayerSpec] = Field(default_factory=_paper_layers)
    activation_bits: int = Field(default=8, ge=2, le=8, description="bits of hidden activations")
    lstm: list[int] | None = Field(default=None, min_length=1,
                                   description="LSTM state sizes, first layer first; replaces 'layers'")

    @field_validator("lstm")
    @classmethod
    def _positive_sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(n < 1 for n in v):
            raise ValueError(f"LSTM state sizes must be at least 1 (got {v})")
        return v

    @model_validator(mode="after")
    def _cnn_or_lstm(self) -> "EncoderSpec":
        if self.lstm is not None:
            clash = sorted({"layers", "activation_bits"} & self.model_fields_set)
            if clash:
                raise ValueError(f"an LSTM encoder (lstm: {self.lstm}) has no {' or '.join(clash)}: its input, "
                                 "hidden and gate values are 8-bit; give either 'lstm' or CNN 'layers'")
        return self

    @property
    def is_lstm(self) -> bool:
        return self.lstm is not None


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


class SeriesSpec(_Strict):
    """How a multi-site time series becomes samples (see :mod:`quant_models.series`)."""

    window: int = Field(default=50, ge=2, description="W: samples per node view")
    horizon: int = Field(default=1, ge=1, description="the target is this many steps after the window's last")
    target: str | None = Field(default=None, description="site whose future value is binned; default: node 0's first site")
    classes: int = Field(default=20, ge=2, description="K: classes, by training-split quantiles of the target")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="the last part of the time span, for testing")
    input_range_stds: float = Field(default=3.0, gt=0,
                                    description="training standard deviations either side of the mean that fill int8")


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
    series: SeriesSpec | None = Field(default=None, description="windows and task of a time-series dataset")
    head: HeadSpec = Field(default_factory=HeadSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    devices: DevicesSpec = Field(default_factory=DevicesSpec)
    source: str = Field(default="<memory>", exclude=True)

    @model_validator(mode="after")
    def _encoder_fits_dataset(self) -> "Experiment":
        """Cross-field checks, raised as ConfigError naming the field they are about."""
        def fail(field: str, why: str) -> None:
            raise ConfigError(f"{self.source}: field '{field}': {why}")

        series = is_series_dataset(self.dataset)
        if series and not self.encoder.is_lstm:
            fail("encoder", f"{self.dataset!r} is a time series: give an LSTM encoder, e.g. encoder: {{lstm: [40, 9]}} "
                            "(the centralized scheme's base station uses the same sizes)")
        if self.encoder.is_lstm and not series:
            fail("encoder.lstm", f"LSTM encoders read time series (irish-wind, csv:PATH), not {self.dataset!r}")
        if self.encoder.is_lstm and self.scheme == "autoencoder":
            fail("scheme", "the autoencoder scheme reconstructs images; it has no time-series form")
        if self.encoder.is_lstm and self.code.bits not in LSTM_CODE_BITS:
            fail("code.bits", f"an LSTM encoder's codes are signed q-bit values; q = {self.code.bits} is not "
                              f"supported, use one of {list(LSTM_CODE_BITS)}")
        return self

    def content_hash(self) -> str:
        """Hash of everything that determines the trained model (not name, description, devices).
        Fields added later are left out while unset, so older experiments keep their hash."""
        content = self.model_dump(mode="json", exclude={"name", "description", "source", "devices"})
        if content["series"] is None:
            del content["series"]
        if content["encoder"]["lstm"] is None:
            del content["encoder"]["lstm"]
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
        if self.scheme != "centralized" and not self.encoder.is_lstm:  # an LSTM reads any window
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
        if self.encoder.lstm is not None and self.code.values != nodes * self.encoder.lstm[-1]:
            raise ConfigError(
                f"{self.source}: field 'code.values': each of the {nodes} nodes sends its last LSTM layer's final "
                f"hidden state ({self.encoder.lstm[-1]} values, field 'encoder.lstm'), so C must be "
                f"{nodes} x {self.encoder.lstm[-1]} = {nodes * self.encoder.lstm[-1]} (got {self.code.values})")
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
