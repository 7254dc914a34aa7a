"""The one exceptions module of hilbench.

Every error a user can cause or meet derives from :class:`HilbenchError`, so the CLI can print
it as a one-line message (file, field or device first, then what to do) instead of a traceback.
"""
from __future__ import annotations


class HilbenchError(Exception):
    """Base of all errors hilbench raises on purpose."""


class ConfigError(HilbenchError):
    """A user-facing file (experiment, device profile) or option is invalid."""


class DatasetError(HilbenchError):
    """A dataset is unknown, missing or malformed."""


class ModelError(HilbenchError):
    """A model cannot be built, trained, exported or lowered as asked."""


class DeviceError(HilbenchError):
    """A device cannot be built for, deployed, reached or used."""


class BuildError(DeviceError):
    """Firmware or a device model cannot be built (a missing tool, a compile or link error, a
    model too large for the board): deterministic, so trying again cannot help."""


class ProtocolError(DeviceError):
    """A device sent a frame that is malformed, corrupted or unexpected."""


class MeasurementError(HilbenchError):
    """A measurement cannot be computed from the data at hand."""
