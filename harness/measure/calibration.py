"""Calibrating a device's modelled figures against its meter (``hilbench devices calibrate``).

A known workload (an experiment's node-0 encoder on its first test samples) runs on the device
inside its meter (:mod:`harness.measure.metering`, the same windows as a run): the meter gives
the active power (mean power inside the inference windows) and the idle power (between them),
the device's timer the cycles per inference. The same inferences on the device's emulated
stand-in give instructions per inference; cycles / instructions, per sample, is the cycles per
emulated instruction (their median). The result is written as a profile overlay
(``overlays/NAME.yaml``: ``power`` and ``calibration``), which replaces the profile's datasheet
figures wherever it is loaded, and which an emulated profile uses through ``calibrated_by``.

With a simulated meter (an emulated profile) the same steps run, and every figure says
"simulated meter": the power it finds is the profile's own (the trace was drawn from it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from harness.config.profiles import OVERLAY_DIR, DeviceProfile
from harness.core.errors import ConfigError, MeasurementError
from harness.measure.metering import MEASURED_LABEL, SIMULATED_LABEL, check_meter, open_metering

if TYPE_CHECKING:
    from quant_models.experiment import Experiment

    from harness.store.results import ResultsStore


@dataclass(frozen=True)
class Calibration:
    """What a calibration found on ``profile``, ready to be written as its overlay."""

    profile: str
    active_mw: float
    idle_mw: float
    cycles_per_instruction: float | None
    against: str | None
    workload: str
    samples: int
    windows: int
    meter: str
    label: str
    measured_at: str
    device_count_unit: str
    device_count_per_inference: float
    emulated_instructions_per_inference: float | None

    def overlay(self) -> dict[str, Any]:
        """The overlay's mapping: ``power`` and ``calibration``."""
        what = "simulated meter (not a measurement)" if self.label == SIMULATED_LABEL else "measured"
        return {
            "power": {"active_mw": round(self.active_mw, 4), "idle_mw": round(self.idle_mw, 4),
                      "source": f"{what} by `hilbench devices calibrate {self.profile}` on {self.measured_at}: mean "
                                f"power inside {self.windows} inference windows (active) and between them (idle), "
                                f"workload {self.workload}; {self.meter}"},
            "calibration": {"cycles_per_instruction": None if self.cycles_per_instruction is None
                            else round(self.cycles_per_instruction, 5),
                            "against": self.against, "workload": self.workload, "samples": self.samples,
                            "windows": self.windows, "meter": self.meter, "label": self.label,
                            "measured_at": self.measured_at},
        }


def _rows(views: np.ndarray, target: Any, samples: list[int], metering: Any = None) -> list[dict[str, Any]]:
    """Every sample through ``target`` in its batches; each batch told to ``metering``."""
    rows: list[dict[str, Any]] = []
    pending = list(samples)
    while pending:
        batch = pending[:max(1, target.batch_size)]
        t0 = time.monotonic()
        replies = target.infer_batch(views[batch])
        t1 = time.monotonic()
        got = [{"sample": s, "latency": r.latency, "latency_unit": r.latency_unit, "device_count": r.device_count,
                "device_unit": r.device_unit} for s, r in zip(batch, replies)]
        if metering is not None:
            metering.batch(0, got, t0, t1)
        rows += got
        del pending[:len(batch)]
    return rows


def calibrate(profile: DeviceProfile, experiment: Experiment, samples: int, store: ResultsStore,
              emulated: DeviceProfile | None = None, progress: Any = None) -> Calibration:
    """Run the workload on ``profile`` inside its meter (and on ``emulated`` for instruction
    counts); the figures for its overlay. The meter session and raw samples are kept in
    ``store`` under run id ``calibrate-NAME-TIME``."""
    from quant_models.datasets import load_experiment_dataset
    from quant_models.pipeline import get_exported

    from harness.targets.contract import open_node_target

    if profile.meter is None:
        raise ConfigError(f"{profile.source}: field 'meter': device {profile.name!r} has no meter to calibrate with; "
                          "add a meter section (see README, 'Energy from a power meter')")
    if profile.kind != "mcu":
        raise ConfigError(f"{profile.source}: field 'kind': calibration runs microcontroller firmware; "
                          f"device {profile.name!r} is {profile.kind}")
    if emulated is not None and not emulated.emulated:
        raise ConfigError(f"{emulated.source}: device {emulated.name!r} is not emulated: give an emulated stand-in")
    check_meter(profile)
    data = load_experiment_dataset(experiment)
    samples = min(samples, len(data.test_y))
    views = experiment.partition_for(data.image_shape, data.classes).views(data.test_x[:samples])[0]
    model = get_exported(experiment, progress=progress, data=data)
    encoder = model.node_models[0]
    run_id = f"calibrate-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    wanted = list(range(samples))
    metering = open_metering(store, run_id, {profile.name: profile}, [profile.name])
    with metering:
        with open_node_target(profile, encoder, model.directory) as target:
            rows = _rows(views, target, wanted, metering)
    session = metering.sessions.get(0)
    if session is None or session["status"] != "complete":
        raise MeasurementError(f"calibrating {profile.name}: the meter session failed: "
                               f"{None if session is None else session['error']}")
    if session["windows"] != samples:
        raise MeasurementError(f"calibrating {profile.name}: {session['windows']} marker windows for {samples} "
                               "inferences; check the marker wiring (and that no request was retried)")
    counts = np.array([r["device_count"] for r in rows], dtype=float)
    cpi = None
    instructions = None
    if emulated is not None:
        with open_node_target(emulated, encoder, model.directory) as stand_in:
            emulated_rows = _rows(views, stand_in, wanted)
        instr = np.array([r["device_count"] for r in emulated_rows], dtype=float)
        if {r["device_unit"] for r in emulated_rows} != {"instructions"}:
            raise MeasurementError(f"{emulated.name}: its counts are not emulated instructions")
        cpi = float(np.median(counts / instr))
        instructions = float(instr.mean())
    return Calibration(
        profile=profile.name, active_mw=session["gross_j"] / session["window_s"] * 1e3, idle_mw=session["idle_w"] * 1e3,
        cycles_per_instruction=cpi, against=None if emulated is None else emulated.name,
        workload=f"{experiment.name} node 0, test samples 0..{samples - 1}", samples=samples,
        windows=int(session["windows"]), meter=session["basis"],
        label=SIMULATED_LABEL if session["simulated"] else MEASURED_LABEL,
        measured_at=time.strftime("%Y-%m-%d %H:%M:%S %z"), device_count_unit=str(rows[0]["device_unit"]),
        device_count_per_inference=float(counts.mean()), emulated_instructions_per_inference=instructions)


def write_overlay(calibration: Calibration, profile_dir: Path) -> Path:
    """``profile_dir/overlays/NAME.yaml`` (a profile search directory: shipped, $HILBENCH_PROFILE_DIRS
    or ~/.config/hilbench/devices/)."""
    path = Path(profile_dir) / OVERLAY_DIR / f"{calibration.profile}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Written by `hilbench devices calibrate {calibration.profile}` on {calibration.measured_at}.\n"
              f"# It replaces the power and calibration sections of profile {calibration.profile!r}.\n")
    path.write_text(header + yaml.safe_dump(calibration.overlay(), sort_keys=False, width=100))
    return path
