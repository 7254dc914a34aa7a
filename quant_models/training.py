"""Quantization-aware training of a split model, deterministic for a seed.

Also watches for dead encoders: a node whose codes are all zero carries no information (its
ReLU quantizer sits below zero, or its output scale collapsed). After every epoch each node's
codes on a fixed monitor batch are checked; a dead node's code layer is re-initialised
(:meth:`NodeEncoder.revive`) and the event is reported in the metrics.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from harness.core.errors import ModelError

from .datasets import Dataset, input_exponent
from .experiment import Experiment
from .model import SCHEMES, LstmEncoder, NodeEncoder, SplitModel, build_model
from .partition import Partition, make_partition

MONITOR_SAMPLES = 512
EVAL_BATCH = 1000


def views_as_tensors(partition: Partition, images: np.ndarray) -> list[torch.Tensor]:
    """Model input per node: ``code x 2^e`` as float32 [N, 1, h, w]: ``pixel / 256`` for uint8
    images, ``code / 128`` for int8 series windows (exact in float32 either way)."""
    scale = 2.0 ** input_exponent(images)
    return [torch.from_numpy(v).float().unsqueeze(1) * scale for v in partition.views(images)]


@dataclass
class NodeHealth:
    node: int
    zero_code_fraction: float  # fraction of code values that are 0
    all_zero_samples: float  # fraction of samples whose whole code is 0
    constant_dimensions: int  # code positions that never change on the monitor batch
    code_len: int
    code_scale: float

    @property
    def dead(self) -> bool:
        """All-zero codes, or codes that are the same for every input: no information sent."""
        return self.all_zero_samples >= 0.99 or self.constant_dimensions == self.code_len


@torch.no_grad()
def encoder_health(model: SplitModel, views: list[torch.Tensor]) -> list[NodeHealth]:
    was_training = model.training
    model.eval()
    report = []
    for i, (enc, v) in enumerate(zip(model.node_encoders(), views)):
        codes = enc.codes(v) if enc.quantized else enc(v)
        report.append(NodeHealth(
            node=i, zero_code_fraction=float((codes == 0).float().mean()),
            all_zero_samples=float((codes == 0).all(dim=1).float().mean()),
            constant_dimensions=int((codes.max(dim=0).values == codes.min(dim=0).values).sum()),
            code_len=enc.code_len, code_scale=enc.code_scale()))
    model.train(was_training)
    return report


@torch.no_grad()
def predict(model: SplitModel, views: list[torch.Tensor]) -> np.ndarray:
    model.eval()
    preds = []
    for start in range(0, views[0].shape[0], EVAL_BATCH):
        batch = [v[start:start + EVAL_BATCH] for v in views]
        preds.append(model(batch).argmax(dim=1))
    return torch.cat(preds).numpy()


@dataclass
class TrainResult:
    model: SplitModel
    partition: Partition
    metrics: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


ProgressFactory = Callable[[int, str], Callable[[int], None]]


def train(exp: Experiment, data: Dataset, progress: ProgressFactory | None = None) -> TrainResult:
    """Train ``exp`` on ``data``; ``progress(total_steps, label)`` returns an advance(n) callback.

    LSTM models train on one thread: their ops are small (a [64, 160] matmul per step), and a
    second thread only waits for its share, badly on a busy machine (measured 0.14 s per
    encoder step on one thread, seconds with two while other jobs run)."""
    with one_thread(exp.encoder.is_lstm):
        return _train(exp, data, progress)


@contextmanager
def one_thread(when: bool = True) -> Iterator[None]:
    """Run torch on one thread inside (when ``when``), restoring the thread count after."""
    threads = torch.get_num_threads()
    if when:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(exp: Experiment, data: Dataset, progress: ProgressFactory | None) -> TrainResult:
    torch.manual_seed(exp.training.seed)
    rng = np.random.default_rng(exp.training.seed)
    partition = make_partition(exp.partition, data.image_shape)
    model = build_model(exp, partition, data.classes)
    loss_fn = SCHEMES.get(exp.scheme).loss
    train_x, train_y = data.train_x, data.train_y
    if exp.training.train_samples:
        train_x, train_y = train_x[:exp.training.train_samples], train_y[:exp.training.train_samples]
    views = views_as_tensors(partition, train_x)
    labels = torch.from_numpy(train_y.astype(np.int64))
    monitor = [v[:MONITOR_SAMPLES] for v in views]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=exp.training.learning_rate) if params else None
    n, bs = len(labels), exp.training.batch_size
    steps_per_epoch = (n + bs - 1) // bs
    advance = progress(exp.training.epochs * steps_per_epoch, f"training {exp.name}") if progress else (lambda k: None)
    log: list[str] = []
    revived: list[dict] = []
    epoch_losses = []
    started = time.perf_counter()
    steps = 0
    for epoch in range(exp.training.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(n))
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            loss = loss_fn(model, [v[idx] for v in views], labels[idx], exp)
            if optimizer is None:
                raise ModelError(f"{exp.name}: the model has no trainable parameters")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            steps += 1
            advance(1)
        epoch_losses.append(total / n)
        health = encoder_health(model, monitor)
        for h in health:
            if h.dead:
                enc = model.node_encoders()[h.node]
                if not isinstance(enc, (NodeEncoder, LstmEncoder)):
                    raise ModelError(f"epoch {epoch}: node {h.node} sends raw pixels that are all zero or "
                                     "constant; it has no code layer to re-initialise")
                enc.revive()
                revived.append({"epoch": epoch, "node": h.node})
                log.append(f"epoch {epoch}: node {h.node} encoder dead (all-zero or constant codes); re-initialised its "
                           f"code {'quantizer' if isinstance(enc, LstmEncoder) else 'layer'}")
        log.append(f"epoch {epoch}: loss {epoch_losses[-1]:.4f}")
    train_seconds = time.perf_counter() - started
    model.eval()
    test_pred = predict(model, views_as_tensors(partition, data.test_x))
    health = encoder_health(model, monitor)
    metrics = {
        "experiment": exp.name, "scheme": exp.scheme, "dataset": data.name,
        "dataset_source": data.source, "dataset_split": data.split,
        "nodes": partition.nodes, "code_values": sum(e.code_len for e in model.node_encoders()),
        "code_bits": exp.code.bits if exp.scheme != "centralized" else 8,
        "epochs": exp.training.epochs, "steps": steps, "train_samples": n,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / steps if steps else None,
        "epoch_losses": epoch_losses,
        "test_samples": int(len(data.test_y)),
        "test_accuracy": float((test_pred == data.test_y).mean()),
        "revived_encoders": revived,
        "encoder_health": [h.__dict__ | {"dead": h.dead} for h in health],
        "dead_encoders": [h.node for h in health if h.dead],
    }
    log.append(f"test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_samples']} samples")
    return TrainResult(model, partition, metrics, log)
