"""calbench: one protocol for train-time calibration methods."""

__version__ = "0.1.0"
