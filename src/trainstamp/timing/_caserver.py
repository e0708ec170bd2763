"""caproto's asyncio server, answering every refused put the way EPICS' rsrv does.

When a putter raises, caproto's server answers a put with ``CA_PROTO_ERROR``
(``ErrorResponse``, status ``ECA_PUTFAIL``, with the exception text). That reaches
libca (pyepics) and caproto's sync client. caproto's *threading* client, however,
ignores ``CA_PROTO_ERROR`` for a put with callback. That client is the one ophyd's
caproto control layer uses. So the put waits for a ``CA_PROTO_WRITE_NOTIFY`` that never
comes, and the client times out after its full timeout.

EPICS' own server, rsrv, answers a refused put-with-callback with
``CA_PROTO_WRITE_NOTIFY`` carrying the error status (``putNotifyErrorReply``). This
server sends both answers, in this order:

1. ``ErrorResponse``, with the message. The sync client raises on it, and libca
   reports ``ECA_PUTFAIL`` through the put callback and forgets the request.
2. ``WriteNotifyResponse`` with status ``ECA_PUTFAIL``. The threading client completes
   the put at once with that status. libca has already forgotten this request, and
   ignores a response to a request it no longer holds.

A put without callback is answered by the ``ErrorResponse`` alone, as in rsrv, and that
part is unchanged. If the client has already closed the circuit when the refusal is
ready, nothing is sent; caproto's own server logs a ``KeyError`` in that case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import caproto as ca
from caproto.asyncio.server import Context as _AsyncioContext
from caproto.asyncio.server import VirtualCircuit as _AsyncioCircuit

log = logging.getLogger(__name__)


class VirtualCircuit(_AsyncioCircuit):
    """A circuit that follows every refusal of a put-with-callback with a
    ``WriteNotifyResponse`` carrying the refusal's status."""

    async def send(self, *commands) -> None:
        answers = []
        for command in commands:
            answers.append(command)
            if (isinstance(command, ca.ErrorResponse)
                    and command.original_request.command == ca.WriteNotifyRequest.ID):
                request = command.original_request
                answers.append(ca.WriteNotifyResponse(
                    data_type=request.data_type, data_count=request.data_count,
                    status=command.status, ioid=request.parameter2))
        await super().send(*answers)

    async def _start_write_task(self, handle_write) -> None:
        async def guarded() -> None:
            try:
                await handle_write()
            except KeyError:
                # caproto's handler looks the channel up again to refuse the put; a
                # client that already closed the circuit (a put without callback,
                # then exit) is gone, and there is nobody left to answer.
                log.debug("put refused after its client left")

        await super()._start_write_task(guarded)


class Context(_AsyncioContext):
    CircuitClass = VirtualCircuit


async def start_server(pvdb, *, interfaces=None, log_pv_names=False, startup_hook=None):
    """Like :func:`caproto.asyncio.server.start_server`, with :class:`VirtualCircuit`."""
    ctx = Context(pvdb, interfaces)
    return await ctx.run(log_pv_names=log_pv_names, startup_hook=startup_hook)


def run(pvdb, *, interfaces=None, log_pv_names=False, startup_hook=None) -> None:
    """Like :func:`caproto.server.run` for asyncio, with :class:`VirtualCircuit`."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(start_server(pvdb, interfaces=interfaces, log_pv_names=log_pv_names,
                                 startup_hook=startup_hook))
