"""A put waiting for its answer when the IOC dies fails at once, naming the PV.

caproto's threading client wakes such a put when the circuit dies, with no answer to
hand back; unpatched it then raised ``KeyError: 'response'``, which names nothing (seen
when the detector emulator's IOC died under a running ``train_fly``).
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from trainstamp import signals
from trainstamp.testing import RefusingIOCProcess, random_prefix, wait_until

pytestmark = pytest.mark.system


@pytest.mark.skipif(signals.control_layer() != "caproto", reason="caproto's client only")
def test_a_put_in_flight_when_the_ioc_dies_raises_a_connection_error(ca_ports):
    from caproto.threading.client import Context

    signals.install()
    with RefusingIOCProcess(ca_ports, random_prefix("RD")) as ioc:
        ctx = Context()
        try:
            (pv,) = ctx.get_pvs(ioc.prefix + "SLOW", timeout=10)
            pv.wait_for_connection(timeout=10)
            errors: list[BaseException] = []

            def put() -> None:
                try:
                    pv.write([1.0], wait=True, timeout=30)  # the IOC answers after 0.3 s
                except BaseException as exc:
                    errors.append(exc)

            writer = threading.Thread(target=put)
            writer.start()
            circuit = pv.circuit_manager
            wait_until(lambda: len(circuit.ioids) > 0, timeout=10, message="put in flight")
            os.kill(ioc.proc.pid, signal.SIGKILL)
            writer.join(timeout=30)
            assert not writer.is_alive()
        finally:
            ctx.disconnect()
    (error,) = errors
    assert isinstance(error, ConnectionError), repr(error)
    assert ioc.prefix + "SLOW" in str(error) and "closed before it answered" in str(error)
