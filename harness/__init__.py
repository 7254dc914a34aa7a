"""hilbench: hardware-in-the-loop benchmarks for communication-efficient split neural networks."""

__version__ = "0.1.0"
