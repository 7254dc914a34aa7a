"""The ``hilbench`` command: a thin layer over the library. Heavy imports happen inside commands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from harness.core.errors import HilbenchError

if TYPE_CHECKING:
    from quant_models.datasets import Dataset
    from quant_models.experiment import Experiment

    from harness.store.results import ResultsStore


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1, else a usage error naming the option."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})")
    return value


def _checked_experiment(path: str) -> tuple[Experiment, Dataset]:
    """The experiment and its dataset, with its partition, C and encoder checked against the data,
    so a bad file fails before anything trains."""
    from quant_models.datasets import load_experiment_dataset
    from quant_models.experiment import load_experiment

    exp = load_experiment(path)
    data = load_experiment_dataset(exp)
    exp.partition_for(data.image_shape, data.classes)
    return exp, data


def _results_store(db: Path | None) -> ResultsStore:
    from harness.store.results import ResultsStore

    try:
        return ResultsStore(db)
    except OSError as exc:
        blocked = next((p for p in Path(db or ".").parents if p.is_file()), None)
        why = f"{blocked} is a file, not a directory" if blocked else exc.strerror or str(exc)
        raise HilbenchError(f"{db or 'results/hilbench.sqlite'}: cannot open the results database ({why}); "
                            "give --db a file in a directory you can write") from exc


def _cmd_train(args: argparse.Namespace) -> int:
    exp, data = _checked_experiment(args.experiment)

    from quant_models.pipeline import get_trained_model

    from harness.console import console, key_value_table, progress_factory

    with progress_factory() as progress:
        trained = get_trained_model(exp, retrain=args.retrain, progress=progress, cache_root=args.cache_dir,
                                    data=data)
    m = trained.cached.metrics
    summary = {
        "experiment": exp.name, "trained": "now" if trained.trained_now else "no (cache hit)",
        "cache": str(trained.cached.directory), "dataset": f"{m['dataset']} ({m['dataset_split']})",
        "test accuracy": f"{m['test_accuracy']:.4f} on {m['test_samples']} test samples (host, Brevitas)",
        **({"golden accuracy": f"{m['golden_test_accuracy']:.4f} (integer LSTM codes, numpy; "
                               f"{m['golden_code_match']:.2%} of codes equal Brevitas' on the first "
                               f"{m.get('golden_code_match_samples', m['test_samples'])} test samples)"}
           if "golden_test_accuracy" in m else {}),
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
    exp, data = _checked_experiment(args.experiment)

    from quant_models.pipeline import export_trained, get_trained_model

    from harness.console import console, key_value_table, progress_factory

    with progress_factory() as progress:
        trained = get_trained_model(exp, progress=progress, cache_root=args.cache_dir, data=data)
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


def _cmd_devices_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.console import stdout
    from harness.config.profiles import scan_profiles

    scanned = scan_profiles()
    table = Table(title="device profiles")
    table.add_column("name", no_wrap=True)
    for col in ("kind", "emulated", "board / cpu", "deploy", "file"):
        table.add_column(col, overflow="fold")
    for name, p in sorted(scanned.usable.items()):
        table.add_row(name, p.kind, "yes" if p.emulated else "no", p.board or p.cpu, p.deploy.method, p.source)
    for name, error in sorted(scanned.unusable.items()):
        table.add_row(name, "[red]unusable[/red]", "", "", "", str(error))
    stdout.print(table)
    return 0


def _cmd_devices_show(args: argparse.Namespace) -> int:
    import yaml

    from harness.config.profiles import get_profile

    profile = get_profile(args.name)
    print(f"# {profile.source}")
    print(yaml.safe_dump(profile.model_dump(mode="json", exclude_none=True), sort_keys=False), end="")
    return 0


def _cmd_devices_check(args: argparse.Namespace) -> int:
    """Deploy node 0 of an experiment's model to the device and shake hands (HELLO, PING)."""
    from harness.config.profiles import get_profile, preflight

    from harness.console import console, key_value_table, progress_factory

    profile = get_profile(args.name)
    preflight(profile)
    if profile.kind != "mcu":
        from harness.targets.linux.roles import check_linux_device

        console.print(key_value_table(f"{profile.name}: ok", check_linux_device(profile)))
        return 0
    exp, data = _checked_experiment(args.experiment)

    from quant_models.pipeline import get_exported

    from harness.targets.mcu.deploy import deploy_mcu_node

    with progress_factory() as progress:
        encoder = get_exported(exp, progress=progress, data=data).node_models[0]
    with deploy_mcu_node(profile, encoder) as node:
        hello, rtt = node.target.hello, node.target.ping()
        fw = node.firmware
        console.print(key_value_table(f"{profile.name}: ok", {
            "board": hello.board, "emulated": profile.emulated, "protocol": hello.protocol_version,
            "model hash": f"{hello.model_hash.hex()} (matches {exp.name} node 0)",
            "input / code": f"{hello.input_h}x{hello.input_w} -> {hello.code_len} x {hello.code_bits} bits "
                            f"({hello.code_bytes} bytes)",
            "clock / timer": f"{hello.clock_hz} Hz / {hello.timer_hz} Hz ({hello.timer_kind.name})",
            "flash": f"{fw.flash_bytes} of {fw.flash_capacity} bytes",
            "RAM": f"{fw.ram_bytes} of {fw.ram_capacity} bytes (stack estimate {fw.max_stack_bytes} B)",
            "ping round trip": f"{rtt * 1000:.2f} ms (host wall clock)",
        }))
    return 0


def _cmd_devices_calibrate(args: argparse.Namespace) -> int:
    """Run a known workload on the device inside its meter; write measured power and cycles per
    emulated instruction as the profile's overlay."""
    from quant_models.experiment import load_experiment

    from harness.config.profiles import USER_PROFILES, get_profile, preflight
    from harness.console import console, key_value_table, progress_factory
    from harness.measure.calibration import calibrate, write_overlay

    profile = get_profile(args.name)
    preflight(profile)
    emulated = None if args.no_emulated else get_profile(args.emulated or _default_stand_in(profile),
                                                         named_by="--emulated")
    store = _results_store(args.db)
    with progress_factory() as progress:
        cal = calibrate(profile, load_experiment(args.experiment), args.samples, store, emulated, progress)
    path = write_overlay(cal, Path(args.profile_dir) if args.profile_dir else USER_PROFILES)
    rows: dict[str, object] = {"label": cal.label, "active power": f"{cal.active_mw:.3f} mW (mean inside {cal.windows} windows)",
            "idle power": f"{cal.idle_mw:.3f} mW (between windows)",
            f"{cal.device_count_unit} per inference": f"{cal.device_count_per_inference:,.1f}"}
    if cal.cycles_per_instruction is not None:
        rows["emulated instructions per inference"] = f"{cal.emulated_instructions_per_inference:,.1f} ({cal.against})"
        rows[f"{cal.device_count_unit} per emulated instruction"] = f"{cal.cycles_per_instruction:.4f}"
    rows |= {"meter": cal.meter, "overlay": str(path)}
    console.print(key_value_table(f"{profile.name}: calibrated", rows))
    if args.json:
        print(json.dumps({**cal.overlay(), "overlay": str(path)}))
    return 0


def _default_stand_in(profile) -> str:
    """The emulated stand-in whose instructions a device's cycles are divided by: the profile
    itself when emulated, else the shipped emulated profile on the same CPU (Cortex-M4F:
    stm32f405-qemu)."""
    from harness.config.profiles import load_profiles

    if profile.emulated:
        return profile.name
    for name, candidate in sorted(load_profiles().items()):
        if candidate.emulated and candidate.kind == "mcu" and candidate.cpu == profile.cpu and candidate.meter is None \
                and candidate.calibrated_by is None:
            return name
    raise HilbenchError(f"no emulated profile with cpu {profile.cpu!r} to count instructions on; give --emulated "
                        "PROFILE or --no-emulated")


def _cmd_run(args: argparse.Namespace) -> int:
    from quant_models.experiment import load_experiment

    from harness.console import console, progress_factory, summary_table
    from harness.run import RunOptions, run_experiment

    exp = load_experiment(args.experiment)
    store = _results_store(args.db)
    from harness.transports.faults import parse_link_faults

    options = RunOptions(nodes_device=args.nodes_device, gateway_device=args.gateway_device,
                         samples=args.samples, new=args.new, device_slots=args.device_slots,
                         link_faults=parse_link_faults(args.link_faults) if args.link_faults else None)
    with progress_factory() as progress:
        summary = run_experiment(exp, store, options, progress)
    console.print(summary_table(summary))
    for line in _meter_lines(summary):
        console.print(line)
    console.print(f"results: {store.path} (run {summary['run_id']}); report: hilbench report --run {summary['run_id']} --out DIR")
    if args.json:
        print(json.dumps(summary))
    return 0


def _meter_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per metered node: its compute energy per inference beside the model's, and the basis."""
    per_node = (summary.get("energy") or {}).get("per_node") or []
    lines = []
    for node, e in zip(summary["nodes"], per_node):
        m = node.get("meter")
        if not m:
            continue
        if not m["windows"]:
            lines.append(f"node {node['node']} energy: no meter session could be read ({m['basis']}): the model's "
                         f"figure is used; {m['failed_sessions'][-1]['error']}")
            continue
        gross, net = m["gross_uj"], m["net_uj"]
        median = f", median {gross['median']:.2f} (p10 {gross['p10']:.2f}, p90 {gross['p90']:.2f})" if "median" in gross else ""
        model = "" if e.get("compute_model_uj") is None else f"; model {e['compute_model_uj']:.2f} uJ"
        lines.append(f"node {node['node']} energy ({m['label']}): gross {gross['mean']:.2f} uJ{median}, net "
                     f"{net['mean']:.2f} uJ per inference over {m['windows']} windows / {m['inferences']} inferences"
                     f"{model}. Basis: {m['basis']}")
    return lines


def _cmd_results_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.console import stdout

    runs = _results_store(args.db).runs()
    table = Table(title=f"runs in {args.db or 'results/hilbench.sqlite'}")
    table.add_column("run_id", no_wrap=True)
    for col in ("experiment", "status", "samples", "nodes on", "gateway", "emulated", "accuracy"):
        table.add_column(col, overflow="fold")
    for _, r in runs.iterrows():
        acc = json.loads(r.summary)["accuracy"] if r.summary else None
        table.add_row(r.run_id, r.experiment, r.status, str(r.samples), r.node_device, r.gateway_device,
                      "yes" if r.emulated else "no", "" if acc is None else f"{acc:.4f}")
    stdout.print(table)
    return 0


def _cmd_results_show(args: argparse.Namespace) -> int:
    from harness.console import console, summary_table

    run = _results_store(args.db).run(args.run_id)
    if run["summary"] is None:
        console.print(f"run {args.run_id} is {run['status']}: no summary yet (run it again to resume)")
        return 1
    if args.json:
        print(json.dumps(run["summary"]))
    else:
        console.print(summary_table(run["summary"]))
    return 0


def _cmd_results_export(args: argparse.Namespace) -> int:

    store = _results_store(args.db)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_ids = args.run or list(store.runs().run_id)
    tables = {"runs": store.runs(), "inferences": store.inferences(), "predictions": store.predictions()}
    for name, df in tables.items():
        df = df[df.run_id.isin(run_ids)]
        for col in ("code", "golden_code"):
            if col in df:
                df = df.assign(**{col: df[col].map(lambda b: bytes(b).hex())})
        df.to_csv(out / f"{name}.csv", index=False)
        print(out / f"{name}.csv")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.report.html import write_report, write_study_report

    store = _results_store(args.db)
    if args.study:
        from harness.config.studies import load_study
        from harness.study import study_table

        study = load_study(args.study)
        report = write_study_report(study_table(store, study), study.name, Path(args.out))
    else:
        report = write_report(store, args.run, Path(args.out))
    print(report)
    return 0


def _cmd_radio_airtime(args: argparse.Namespace) -> int:
    from harness.console import console, key_value_table
    from harness.measure.radio_models import airtime_report

    report = airtime_report(args.radio, args.bytes)
    if args.json:
        print(json.dumps(report))
        return 0
    rows = {k: v for k, v in report.items() if not isinstance(v, (list, dict))}
    console.print(key_value_table(f"{args.radio}: {args.bytes} bytes (modelled)", rows))
    for key in ("sources", "notes"):
        for line in report.get(key) or []:
            console.print(f"[dim]{key[:-1]}:[/dim] {line}")
    return 0


def _cmd_radio_list(args: argparse.Namespace) -> int:
    from harness.measure.radio_models import load_radio_profiles

    for name, profile in sorted(load_radio_profiles().items()):
        print(f"{name}\t{profile.description}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    """``study FILE`` runs a study; ``study show FILE`` prints its table; ``study export FILE
    --csv PATH`` writes it as CSV."""
    from harness.config.studies import load_study
    from harness.console import console, progress_factory
    from harness.study import run_study, study_table

    action, target = ("run", args.target) if args.target not in ("show", "export") else (args.target, args.study)
    if target is None:
        raise HilbenchError(f"hilbench study {action} needs the study file")
    if action == "export" and not args.csv:
        raise HilbenchError("hilbench study export needs --csv PATH")
    study = load_study(target)
    store = _results_store(args.db)
    if action == "run":
        with progress_factory() as progress:
            table = run_study(study, store, workers=args.workers, scheduler=args.scheduler,
                              retry_failed=args.retry_failed, progress=progress)
    else:
        table = study_table(store, study)
    if action == "export":
        table.to_csv(args.csv, index=False)
        print(args.csv)
        return 0
    if args.json:
        print(table.to_json(orient="records"))
    else:
        console.print(_study_summary(table, study.name))
    failed = int((table.status == "failed").sum())
    return 1 if action == "run" and failed else 0


def _study_summary(table, name: str):
    from rich.table import Table

    from harness.report.html import missing_value

    out = Table(title=f"study {name}: {len(table)} points")
    columns = [c for c in ("label", "status", "accuracy", "golden_accuracy", "golden_accuracy_full",
                           "bitexact_rate", "bits_per_inference", "node_instructions_per_inference", "reason")
               if c in table.columns]
    for col in columns:
        out.add_column(col, overflow="fold")
    for _, row in table.iterrows():
        out.add_row(*["" if missing_value(row[c]) else f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])
                      for c in columns])
    return out


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

    run = experiment_command("run", "run an experiment end to end on devices (default: emulated)", _cmd_run)
    run.add_argument("--nodes-device", help="device profile for every node (default: the experiment's)")
    run.add_argument("--gateway-device", help="'host' or a linux device profile that runs the head")
    run.add_argument("--samples", type=positive_int, help="test samples to run (default: the whole test split)")
    run.add_argument("--db", type=Path, help="results database (default: results/hilbench.sqlite)")
    run.add_argument("--new", action="store_true", help="start a new run even if this one exists (default: resume)")
    run.add_argument("--device-slots", type=positive_int,
                     help="node devices open at once; nodes beyond run in turn (default: every real device, "
                          "and 2 emulated nodes per core; also $HILBENCH_DEVICE_SLOTS)")
    run.add_argument("--link-faults", metavar="SPEC",
                     help="inject link faults between harness and devices, e.g. flip=5e-4,drop=2e-4,garbage=1e-4,"
                          "stall=1e-3,reset=50000,seed=1 (seeded and reproducible; reported in the run JSON)")

    study = sub.add_parser("study", help="run a study (a base experiment and a matrix of overrides), "
                                         "or `study show FILE`, `study export FILE --csv PATH`")
    study.add_argument("target", help="the study file to run, or show / export")
    study.add_argument("study", nargs="?", help="with show / export: the study file")
    study.add_argument("--json", action="store_true", help="print the study table as JSON records")
    study.add_argument("--workers", type=positive_int, help="Dask worker processes (default: one per core)")
    study.add_argument("--scheduler", help="a Dask scheduler's address (tcp://host:8786) instead of a local cluster")
    study.add_argument("--db", type=Path, help="results database (default: results/hilbench.sqlite)")
    study.add_argument("--retry-failed", action="store_true", help="run the points that failed last time again")
    study.add_argument("--csv", help="with export: the CSV file to write")
    study.set_defaults(func=_cmd_study)

    report = sub.add_parser("report", help="figures and an HTML report from stored runs")
    report.add_argument("--run", action="append", help="run id (repeatable; default: every complete run)")
    report.add_argument("--study", help="a study file: its table and figures instead of runs")
    report.add_argument("--out", required=True, help="output directory")
    report.add_argument("--db", type=Path, help="results database (default: results/hilbench.sqlite)")
    report.set_defaults(func=_cmd_report)

    radio = sub.add_parser("radio", help="radio cost models: airtime and energy").add_subparsers(
        dest="radio_command", required=True)
    airtime = radio.add_parser("airtime", help="time on air and energy of one payload")
    airtime.add_argument("--radio", required=True, help="radio profile (see `hilbench radio list`)")
    airtime.add_argument("--bytes", type=int, required=True, help="application payload bytes")
    airtime.add_argument("--json", action="store_true")
    airtime.set_defaults(func=_cmd_radio_airtime)
    radio.add_parser("list", help="radio profiles").set_defaults(func=_cmd_radio_list)

    results = sub.add_parser("results", help="stored runs: list, show, export").add_subparsers(
        dest="results_command", required=True)
    for name, func, help_ in (("list", _cmd_results_list, "list runs"),
                              ("show", _cmd_results_show, "a run's summary"),
                              ("export", _cmd_results_export, "tables as CSV")):
        p = results.add_parser(name, help=help_)
        p.add_argument("--db", type=Path, help="results database (default: results/hilbench.sqlite)")
        p.set_defaults(func=func)
        if name == "show":
            p.add_argument("run_id")
            p.add_argument("--json", action="store_true")
        if name == "export":
            p.add_argument("--csv", dest="out", required=True, metavar="DIR", help="write CSV files into DIR")
            p.add_argument("--run", action="append", help="only this run (repeatable)")

    devices = sub.add_parser("devices", help="device profiles: list, show, check, calibrate").add_subparsers(
        dest="devices_command", required=True)
    devices.add_parser("list", help="list the device profiles found").set_defaults(func=_cmd_devices_list)
    show = devices.add_parser("show", help="print a device profile")
    show.add_argument("name")
    show.set_defaults(func=_cmd_devices_show)
    check = devices.add_parser("check", help="deploy a model to the device and shake hands")
    check.add_argument("name")
    check.add_argument("--experiment", default="experiments/smoke.yaml",
                       help="whose node-0 encoder to deploy (default: experiments/smoke.yaml)")
    check.set_defaults(func=_cmd_devices_check)
    calibrate = devices.add_parser("calibrate", help="measure a board's active/idle power and cycles per emulated "
                                                     "instruction with its meter; write a profile overlay")
    calibrate.add_argument("name", help="a device profile with a meter section")
    calibrate.add_argument("--experiment", default="experiments/smoke.yaml",
                           help="the workload: this experiment's node-0 encoder (default: experiments/smoke.yaml)")
    calibrate.add_argument("--samples", type=positive_int, default=200, help="inferences to measure (default 200)")
    calibrate.add_argument("--emulated", help="emulated stand-in to count instructions on (default: the emulated "
                                              "profile with the same cpu, e.g. stm32f405-qemu)")
    calibrate.add_argument("--no-emulated", action="store_true", help="measure power only, no cycles per instruction")
    calibrate.add_argument("--profile-dir", help="where the overlay goes: DIR/overlays/NAME.yaml "
                                                 "(default: ~/.config/hilbench/devices)")
    calibrate.add_argument("--db", type=Path, help="where the meter session and raw samples are kept "
                                                  "(default: results/hilbench.sqlite)")
    calibrate.add_argument("--json", action="store_true", help="print the overlay as JSON on stdout")
    calibrate.set_defaults(func=_cmd_devices_calibrate)
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
