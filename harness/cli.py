"""The ``hilbench`` command: a thin layer over the library. Heavy imports happen inside commands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import HilbenchError


def _cmd_train(args: argparse.Namespace) -> int:
    from quant_models.experiment import load_experiment
    from quant_models.pipeline import get_trained_model

    from .console import console, key_value_table, progress_factory

    exp = load_experiment(args.experiment)
    with progress_factory() as progress:
        trained = get_trained_model(exp, retrain=args.retrain, progress=progress, cache_root=args.cache_dir)
    m = trained.cached.metrics
    summary = {
        "experiment": exp.name, "trained": "now" if trained.trained_now else "no (cache hit)",
        "cache": str(trained.cached.directory), "dataset": f"{m['dataset']} ({m['dataset_split']})",
        "test accuracy": f"{m['test_accuracy']:.4f} on {m['test_samples']} test samples (host, Brevitas)",
        "dead encoders": m["dead_encoders"] or "none",
        "revived during training": m["revived_encoders"] or "none",
    }
    if args.json:
        print(json.dumps({"experiment": exp.name, "trained_now": trained.trained_now,
                          "cache_dir": str(trained.cached.directory), **m}))
    else:
        console.print(key_value_table("training", summary))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from quant_models.experiment import load_experiment
    from quant_models.pipeline import export_trained, get_trained_model

    from .console import console, key_value_table, progress_factory

    exp = load_experiment(args.experiment)
    with progress_factory() as progress:
        trained = get_trained_model(exp, progress=progress, cache_root=args.cache_dir)
    result = export_trained(exp, trained, Path(args.out))
    man = result.manifest
    if args.json:
        print(json.dumps({"out": str(result.directory), **man}))
    else:
        console.print(key_value_table("export", {
            "out": str(result.directory), "model hash": man["model_hash"],
            "nodes": len(man["nodes"]), "bits per inference": man["bits_per_inference"],
            "payload bytes per inference": man["payload_bytes_per_inference"],
            "raw bits per inference": man["raw_bits_per_inference"]}))
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from quant_models.datasets import dataset_names

    for name in dataset_names():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hilbench",
        description="Hardware-in-the-loop benchmarks for communication-efficient split neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    def experiment_command(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("experiment", help="experiment YAML file (see experiments/)")
        p.add_argument("--cache-dir", type=Path, default=None,
                       help="model cache (default: $HILBENCH_MODEL_CACHE or ~/.cache/hilbench/models)")
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(func=func)
        return p

    train = experiment_command("train", "train an experiment's split model (QAT), or load it from the cache", _cmd_train)
    train.add_argument("--retrain", action="store_true", help="ignore the cache and train again")
    export = experiment_command("export", "export ONNX encoders/head, integer parameters and hashes", _cmd_export)
    export.add_argument("--out", required=True, help="output directory")
    sub.add_parser("datasets", help="list dataset names").set_defaults(func=_cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HilbenchError as exc:
        print(f"hilbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hilbench: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
