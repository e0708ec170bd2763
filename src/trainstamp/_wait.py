"""Poll a condition with a deadline: how the package and its tests wait for something
that gives no event to wait on (a PV value, a child process getting ready, a file)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call ``predicate`` until it returns something truthy; return that value.

    Raises ``TimeoutError`` naming ``message`` after ``timeout`` seconds. Exceptions
    from the predicate count as "not yet" until the deadline, then are chained.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # "not ready yet" until the deadline
            last_exc = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {text}") from last_exc
        time.sleep(interval)
