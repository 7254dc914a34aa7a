"""What the device runner (devices/runner/hil_runner.py) loads for one node of an export.

A CNN node is ONNX: its QCDQ export, the exact float32 lowering where the export has one, and
the check vectors. A quantized LSTM node has no ONNX (onnxruntime cannot run Brevitas'
QuantLSTM): the runner runs its integer model (``nodeI.int.json``) in numpy, checked with the
same kind of check vectors. Linux nodes and the host's ``local`` node read the same
description, so both run a node through the same runner code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from harness.core.errors import DeviceError
from quant_models.intlstm import IntLstmEncoder
from quant_models.manifest import MANIFEST, NodeModel, load_manifest, node_files

if TYPE_CHECKING:
    from devices.runner.hil_runner import RunnerModel

ModelKind = Literal["onnx", "int-lstm"]


@dataclass(frozen=True)
class RunnerFiles:
    """One node's model for the runner: ``kind`` "onnx" (``model``: the QCDQ ONNX, with
    ``exact_model`` and ``code_exponent``) or "int-lstm" (``model``: the integer LSTM's JSON);
    ``check``: the export's check vectors; ``input_shape``: a view (h, w) or window (rows, steps)."""

    node: int
    kind: ModelKind
    model: Path
    check: Path
    input_shape: tuple[int, int]
    exact_model: Path | None = None
    code_exponent: int | None = None


def runner_files(export_dir: Path, model: NodeModel) -> RunnerFiles:
    """The runner's files for node ``model.node`` of the export in ``export_dir``; DeviceError
    if the export lacks them (exported before devices checked themselves)."""
    node = model.node
    entry = load_manifest(export_dir)["nodes"][node]
    check = entry.get("check_vectors")
    if check is None:
        raise DeviceError(f"{export_dir / MANIFEST}: node {node} has no check vectors, so a device cannot "
                          "prove its codes exact; export the model again")
    shape = (int(model.input_shape[0]), int(model.input_shape[1]))
    if isinstance(model, IntLstmEncoder):
        if entry["kind"] != "lstm-encoder" or "int_params" not in entry:
            raise DeviceError(f"{export_dir / MANIFEST}: node {node} is a {entry['kind']}, not the integer LSTM given")
        return RunnerFiles(node, "int-lstm", export_dir / entry["int_params"], export_dir / check, shape)
    files = node_files(export_dir, node)
    return RunnerFiles(node, "onnx", files.onnx, export_dir / check, shape, files.exact_onnx, model.code_exponent)


def open_in_process(files: RunnerFiles, threads: int = 1) -> "RunnerModel":
    """The runner's model for ``files`` in this process, self-checked as on a device
    (RunnerError if no configuration gives the check vectors' codes)."""
    from devices.runner.hil_runner import IntLstmModel, Model, load_check

    check = load_check(str(files.check))
    if files.kind == "int-lstm":
        return IntLstmModel(str(files.model), check)
    return Model(str(files.model), "node", files.code_exponent, threads=threads,
                 exact_path=None if files.exact_model is None else str(files.exact_model), check=check)
