"""The export manifest (``manifest.json``): what an export directory holds and the hashes that
tie it together, as typed structures for the modules that read it (run engine, pytest plugin,
benchmarks). Reading it needs neither torch nor onnx."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

from harness.core.errors import ModelError

from .intlstm import IntLstmEncoder
from .intparams import IntEncoder

MANIFEST = "manifest.json"
FORMAT = "hilbench-export/2"
CHECK_VECTORS = 16
"""Views per node in the export's check vectors (``nodeI.check.npz``: views and golden codes)."""


class WindowEntry(TypedDict):
    top: int
    left: int
    height: int
    width: int


class NodeEntry(TypedDict):
    node: int
    kind: Literal["encoder", "lstm-encoder", "float-encoder", "raw"]
    view_shape: list[int]
    window: WindowEntry
    code_len: int
    code_bits: int | Literal["float"]
    payload_bytes: int
    sha256: str
    onnx: NotRequired[str]
    int_params: NotRequired[str]
    code_exponent: NotRequired[int]
    code_zero_point: NotRequired[int]  # offset-binary codes (LSTM encoders, raw int8 series): value = (code - zp) x 2^e
    costs: NotRequired[dict[str, int]]  # LSTM encoders: quant_models.intlstm.LstmCosts
    macs: NotRequired[int]
    exact_onnx: NotRequired[str]  # the integer model lowered to exact float32 ONNX (quant_models.exact_onnx)
    accumulation_bound: NotRequired[int]
    check_vectors: NotRequired[str]  # views and their golden codes, for the device's self-check


class HeadEntry(TypedDict):
    onnx: str
    input: str
    sha256: str


class Manifest(TypedDict):
    format: str
    experiment: str
    scheme: str
    image_shape: list[int]
    partition: str
    code_bits: int | str
    nodes: list[NodeEntry]
    head: HeadEntry
    bits_per_inference: int
    payload_bytes_per_inference: int
    raw_bits_per_inference: int
    model_hash: str


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Written last by an export, so a directory with a manifest is a complete export."""
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(directory / MANIFEST)


def has_manifest(directory: Path) -> bool:
    return (directory / MANIFEST).is_file()


def load_manifest(directory: Path) -> Manifest:
    manifest: Manifest = json.loads((directory / MANIFEST).read_text())
    return manifest


@dataclass(frozen=True)
class NodeFiles:
    """What a device needs to run one node encoder exactly: the QCDQ export, its exact float32
    lowering if the export has one, and the golden check vectors."""

    onnx: Path
    exact_onnx: Path | None
    check_vectors: Path | None


def node_files(directory: Path, node: int) -> NodeFiles:
    entry = load_manifest(directory)["nodes"][node]
    if "onnx" not in entry:
        raise ModelError(f"{directory / MANIFEST}: node {node} ({entry['kind']}) has no ONNX encoder")
    exact, check = entry.get("exact_onnx"), entry.get("check_vectors")
    return NodeFiles(directory / entry["onnx"], directory / exact if exact else None,
                     directory / check if check else None)


def load_int_encoders(directory: Path) -> list[IntEncoder]:
    """The integer CNN encoders of every quantized node, in node order (LSTM nodes: see
    :func:`load_node_models`)."""
    return [IntEncoder.load(directory / n["int_params"]) for n in load_manifest(directory)["nodes"]
            if "int_params" in n and n["kind"] == "encoder"]


NodeModel = IntEncoder | IntLstmEncoder
"""What a quantized node runs: a CNN (:mod:`quant_models.intparams`) or an LSTM encoder
(:mod:`quant_models.intlstm`); :func:`quant_models.golden.encode` runs either."""


def load_node_models(directory: Path) -> list[NodeModel]:
    """The integer model of every quantized node, CNN or LSTM, in node order."""
    out: list[NodeModel] = []
    for n in load_manifest(directory)["nodes"]:
        if "int_params" in n:
            path = directory / n["int_params"]
            out.append(IntLstmEncoder.load(path) if n["kind"] == "lstm-encoder" else IntEncoder.load(path))
    return out
