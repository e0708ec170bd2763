"""How many cases a fuzz suite runs: 10,000 in ``make test``, more under ``make fuzz``.

Every fuzz suite in ``tests/`` is marked ``@pytest.mark.fuzz`` and sizes itself with
:func:`fuzz_cases`. A suite may feed several inputs per hypothesis example (a batch of
messages over one connection, say); what counts is the number of inputs checked, and
each suite reports that number with :func:`report_cases` so the figures in
``docs/reliability.md`` come from the run itself.
"""

from __future__ import annotations

import os

#: Environment variable that sets the number of cases; ``make fuzz`` sets it to 100000.
FUZZ_CASES_ENV = "TRAINSTAMP_FUZZ_CASES"
DEFAULT_FUZZ_CASES = 10_000


def fuzz_cases(default: int = DEFAULT_FUZZ_CASES) -> int:
    """The number of cases each fuzz suite must run in this session."""
    text = os.environ.get(FUZZ_CASES_ENV, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{FUZZ_CASES_ENV}={text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{FUZZ_CASES_ENV}={value} must be at least 1")
    return value


def report_cases(suite: str, cases: int, **figures: object) -> str:
    """Print one line of fuzz figures (shown by ``pytest -s`` and ``make fuzz``)."""
    extra = "".join(f", {k}={v}" for k, v in figures.items())
    line = f"fuzz {suite}: {cases} cases{extra}"
    print(line)
    return line
