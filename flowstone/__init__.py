"""FlowStone: asset-first data orchestration on Postgres."""

from flowstone._version import __version__
from flowstone.errors import FlowStoneError, Result

__all__ = ["FlowStoneError", "Result", "__version__"]
