"""The retry policy of an asset's steps: :class:`RetryPolicy`."""

from __future__ import annotations

import random
from collections.abc import Callable

import pydantic

__all__ = ["RetryPolicy"]

_MAX_BACKOFF_EXPONENT = 64  # 2**64 times any backoff is far past any cap; avoids float overflow


class RetryPolicy(pydantic.BaseModel, frozen=True, extra="forbid"):
    """How often a failing step is retried and how long to wait in between.

    ``max_attempts`` counts the first attempt (1 = never retry). The wait after attempt ``n`` is
    ``backoff_s * 2**(n - 1)`` seconds, capped at ``max_backoff_s``; with ``jitter`` it is drawn
    uniformly from the upper half of that (so workers that failed together spread out, yet never
    retry immediately).
    """

    max_attempts: int = pydantic.Field(default=1, ge=1, strict=True)
    backoff_s: float = pydantic.Field(default=1.0, ge=0, allow_inf_nan=False)
    max_backoff_s: float = pydantic.Field(default=300.0, ge=0, allow_inf_nan=False)
    jitter: bool = pydantic.Field(default=True, strict=True)

    def delay_s(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1 = the first) before the next one.

        ``rand`` returns a float in ``[0, 1)``; pass a fixed function to make the delay exact.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, not {attempt}")
        exponent = min(attempt - 1, _MAX_BACKOFF_EXPONENT)
        delay = min(self.max_backoff_s, self.backoff_s * 2.0**exponent)
        if self.jitter:
            return delay * (0.5 + 0.5 * rand())
        return delay
