"""Fixtures of the profile tests: a private redis-server for the queue server."""

from __future__ import annotations

import pytest
from queueserver_parts import redis_server


@pytest.fixture
def redis_addr(tmp_path):
    """``host:port`` of a redis-server of this test alone, in its temp directory."""
    with redis_server(tmp_path / "redis") as addr:
        yield addr
