"""Export a trained split model for deployment.

Per node: a QCDQ ONNX encoder (``dynamo=False``: the dynamo exporter refuses quantized biases)
and its integer parameters (``node{i}.int.json``, see :mod:`quant_models.intparams`); the head as
ONNX taking integer codes (the per-value scales are folded in); and ``manifest.json`` tying them
together with the model hashes. A node's hash is the sha256 of its integer parameters; its first
8 bytes are what firmware reports in HELLO. The model hash covers all nodes and the head.
"""
from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch import nn

from harness.core.errors import ModelError

from . import golden
from .exact_onnx import accumulation_bound, exact_in_float32, write_exact_onnx
from .intlstm import IntLstmEncoder
from .intparams import IntEncoder
from .lstm import LstmEncoder
from .manifest import CHECK_VECTORS, FORMAT, Manifest, NodeEntry, WindowEntry, write_manifest
from .model import NodeEncoder, SplitModel
from .packing import payload_bytes
from .partition import Partition

ONNX_OPSET = 13


class HeadFromCodes(nn.Module):
    """The base station's network on integer codes [B, C] (as float32): code x scale -> head,
    or (code - zero point) x scale where nodes send offset-binary codes (LSTM encoders)."""

    scales: torch.Tensor  # registered buffers
    zero_points: torch.Tensor | None

    def __init__(self, head: nn.Module, scales: torch.Tensor, zero_points: torch.Tensor | None = None):
        super().__init__()
        self.head = head
        self.register_buffer("scales", scales.float())
        has_offsets = zero_points is not None and bool((zero_points != 0).any())
        self.register_buffer("zero_points", zero_points.float() if has_offsets and zero_points is not None else None)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if self.zero_points is not None:
            codes = codes - self.zero_points
        return self.head(codes * self.scales)


def _onnx_export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                      input_names=[input_name], output_names=[output_name],
                      dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})


def export_encoder_onnx(encoder: NodeEncoder, path: Path) -> None:
    """QCDQ ONNX for a quantized encoder (plain ONNX for a float one); output = code values."""
    example = torch.zeros(1, 1, *encoder.view_shape)
    module = copy.deepcopy(encoder).eval()  # export attaches handlers to the module it gets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not encoder.quantized:
            _onnx_export(module, example, path, "view", "code_values")
            return
        from brevitas.export import export_onnx_qcdq
        try:
            export_onnx_qcdq(module, args=example, export_path=str(path), dynamo=False,
                             opset_version=ONNX_OPSET, input_names=["view"], output_names=["code_values"],
                             dynamic_axes={"view": {0: "batch"}, "code_values": {0: "batch"}})
        except Exception as exc:  # brevitas raises assorted types; give one clear error
            raise ModelError(f"QCDQ export of node encoder failed: {exc}") from exc


def export_head_onnx(model: SplitModel, path: Path) -> None:
    wrapper = HeadFromCodes(copy.deepcopy(model.head), model.code_scales(), model.code_zero_points()).eval()
    total = sum(e.code_len for e in model.node_encoders())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _onnx_export(wrapper, torch.zeros(1, total), path, "codes", "logits")


def _sha256_tensors(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _NodeCommon(TypedDict):
    """The keys every :class:`NodeEntry` starts with."""

    node: int
    view_shape: list[int]
    window: WindowEntry
    code_len: int


@dataclass
class ExportResult:
    directory: Path
    manifest: Manifest

    @property
    def model_hash(self) -> str:
        return self.manifest["model_hash"]


def check_views(encoder: IntEncoder, count: int = CHECK_VECTORS) -> np.ndarray:
    """Views that make a wrong lowering show: all black, all white (every product at full scale,
    where int16 pair sums saturate), random black/white and random grey, seeded by the node."""
    rng = np.random.default_rng(encoder.node)
    shape = tuple(encoder.input_shape)
    rest = count - 2
    binary = (rng.random((rest // 2, *shape)) < 0.5).astype(np.uint8) * 255
    grey = rng.integers(0, 256, (rest - rest // 2, *shape), dtype=np.uint8)
    return np.concatenate([np.zeros((1, *shape), np.uint8), np.full((1, *shape), 255, np.uint8), binary, grey])


def export_device_checks(encoder: IntEncoder, out: Path) -> dict:
    """The node's check vectors (views and golden codes) and, where float32 holds every partial
    sum exactly, its exact float32 lowering; the manifest entries naming them."""
    views = check_views(encoder)
    check_name = f"node{encoder.node}.check.npz"
    np.savez_compressed(out / check_name, views=views, codes=golden.encode(encoder, views))
    entries: dict = {"check_vectors": check_name, "accumulation_bound": accumulation_bound(encoder)}
    if exact_in_float32(encoder):
        entries["exact_onnx"] = write_exact_onnx(encoder, out / f"node{encoder.node}.exact.onnx").name
    return entries


def check_windows(encoder: IntLstmEncoder, count: int = CHECK_VECTORS) -> np.ndarray:
    """int8 windows that make a wrong LSTM lowering show: all zero, all -128, all 127 (gates
    and cell state saturate), then random codes, seeded by the node."""
    rng = np.random.default_rng(encoder.node)
    shape = tuple(encoder.input_shape)
    fixed = [np.full((1, *shape), v, np.int8) for v in (0, -128, 127)]
    return np.concatenate([*fixed, rng.integers(-128, 128, (count - 3, *shape), dtype=np.int8)])


def _lstm_entry(enc: LstmEncoder, node: int, out: Path) -> dict:
    """Integer parameters and check vectors of a quantized LSTM node (no ONNX: QCDQ and QONNX
    cannot carry a quantized LSTM; the integer model is the reference)."""
    ie = enc.to_integer(node)
    int_name, check_name = f"node{node}.int.json", f"node{node}.check.npz"
    ie.save(out / int_name)
    windows = check_windows(ie)
    np.savez_compressed(out / check_name, views=windows, codes=golden.encode(ie, windows))
    costs = ie.costs()
    return {"kind": "lstm-encoder", "code_bits": ie.code_bits, "int_params": int_name, "sha256": ie.sha256(),
            "code_exponent": ie.code_exponent, "code_zero_point": ie.code_zero_point, "macs": costs.macs,
            "payload_bytes": payload_bytes(ie.code_len, ie.code_bits), "check_vectors": check_name,
            "costs": costs.as_dict(), "accumulation_bound": max(layer.accumulation_bound() for layer in ie.layers)}


def export_model(model: SplitModel, partition: Partition, out: Path, *, experiment: str = "",
                 scheme: str = "", bits: int | str = 8) -> ExportResult:
    """Write every artifact of ``model`` into ``out`` and return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    nodes: list[NodeEntry] = []
    for i, enc in enumerate(model.node_encoders()):
        win = partition.windows[i]
        common: _NodeCommon = {
            "node": i, "view_shape": list(partition.view_shape(i)),
            "window": {"top": win.top, "left": win.left, "height": win.height, "width": win.width},
            "code_len": enc.code_len}
        entry: NodeEntry
        if isinstance(enc, LstmEncoder) and enc.quantized:
            entry = {**common, **_lstm_entry(enc, i, out)}  # type: ignore[typeddict-item]
        elif isinstance(enc, LstmEncoder):  # float: the head's baseline, no device form
            entry = {**common, "kind": "float-encoder", "code_bits": "float",
                     "sha256": _sha256_tensors(enc.state_dict()), "payload_bytes": 4 * enc.code_len}
        elif isinstance(enc, NodeEncoder):
            onnx_name = f"node{i}.onnx"
            export_encoder_onnx(enc, out / onnx_name)
            if enc.quantized:
                ie = enc.to_integer(i)
                int_name = f"node{i}.int.json"
                ie.save(out / int_name)
                entry = {**common, "onnx": onnx_name, "code_bits": enc.bits, "kind": "encoder",
                         "int_params": int_name, "sha256": ie.sha256(), "code_exponent": ie.code_exponent,
                         "macs": ie.macs, "payload_bytes": payload_bytes(ie.code_len, ie.code_bits),
                         **export_device_checks(ie, out)}
            else:
                entry = {**common, "onnx": onnx_name, "code_bits": "float", "kind": "float-encoder",
                         "sha256": _sha256_tensors(enc.state_dict()), "payload_bytes": 4 * enc.code_len}
        else:  # raw node: sends its pixels
            entry = {**common, "kind": "raw", "code_bits": 8, "code_exponent": enc.input_exponent, "macs": 0,
                     "payload_bytes": enc.code_len, "sha256": hashlib.sha256(b"raw").hexdigest()}
            if enc.code_zero_point():
                entry["code_zero_point"] = enc.code_zero_point()
        nodes.append(entry)
    export_head_onnx(model, out / "head.onnx")
    offsets = {"zero_points": model.code_zero_points()} if bool((model.code_zero_points() != 0).any()) else {}
    head_hash = _sha256_tensors(model.head.state_dict() | {"scales": model.code_scales()} | offsets)
    model_hash = hashlib.sha256("".join([n["sha256"] for n in nodes] + [head_hash]).encode()).hexdigest()
    manifest: Manifest = {"format": FORMAT, "experiment": experiment, "scheme": scheme,
                "image_shape": list(partition.image_shape), "partition": partition.spec,
                "code_bits": bits, "nodes": nodes,
                "head": {"onnx": "head.onnx", "input": "codes", "sha256": head_hash},
                "bits_per_inference": sum(n["code_len"] * (32 if n["code_bits"] == "float" else n["code_bits"])
                                          for n in nodes),
                "payload_bytes_per_inference": sum(n["payload_bytes"] for n in nodes),
                "raw_bits_per_inference": 8 * int(np.prod(partition.image_shape)),
                "model_hash": model_hash}
    write_manifest(out, manifest)
    return ExportResult(out, manifest)
