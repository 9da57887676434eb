"""The single place FlowStone's version is written (read by hatch and ``flowstone --version``)."""

__version__ = "0.3.0"
