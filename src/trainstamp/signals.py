"""EPICS signals whose puts an IOC can refuse, and the user hears of it at once.

A refused put (the IOC's putter raised; on the wire an ``ECA_PUTFAIL``) is lost on the
way to an ophyd user today, under both control layers:

- **caproto layer.** caproto's server refuses a put with an ``ErrorResponse`` carrying
  the putter's message. caproto's threading client has no branch for it
  (``VirtualCircuitManager._process_command``), so the put waits until its timeout. A
  ``WriteNotifyResponse`` with a failing status (how an EPICS base IOC refuses a
  put-callback) is handed to the caller as if it were a success.
- **pyepics layer.** libca reports the refusal to the put callback as a status
  (``ECA_PUTFAIL``) and drops the server's message (``putCallback::exception`` ignores
  its context). pyepics then ignores the status (``epics.ca._onPutEvent``), so
  ``put(wait=True)`` and ophyd's put-completion report the refusal as a success.
- **ophyd.** ``EpicsSignal.set`` without put completion waits for the readback to
  match, so a refusal becomes a timeout; with put completion its callback marks the
  Status successful whatever the layer reports.

This module closes that gap. :func:`install` adds, for the active layer:

- caproto: an ``ErrorResponse`` to a ``WriteNotifyRequest`` is routed to the waiting
  request (the ioid entry is removed and its event set), and ``PV.write(wait=True)``
  raises :class:`PutRefused` for it, and for a ``WriteNotifyResponse`` whose status
  failed; a callback is handed the ``ErrorResponse`` only if it says it understands one
  (``callback.accepts_error_response``); any other is never called for a refusal, so it
  cannot mistake it for a success, and the refusal is logged with the IOC's message;
- caproto: a read or a put that is waiting when the IOC's circuit dies raises
  ``ConnectionError`` naming the PV (caproto wakes it with no answer, and would raise
  ``KeyError: 'response'``);
- pyepics: the put-callback trampoline keeps libca's status, so a put made here can see
  it (pyepics' own callers are unchanged).

:class:`EpicsSignal` is ophyd's ``EpicsSignal`` with every put made as a put-callback
(CA "put with notify") that waits for the IOC's answer:

- ``put()`` returns once the IOC has accepted (or, with put completion, completed) the
  put, and raises :class:`PutRefused` with the IOC's message when it refused it;
- ``set()`` returns a Status that fails with that :class:`PutRefused` as soon as the
  refusal arrives; otherwise it finishes as ophyd's does (put completion, or the
  readback reaching the value).

Under pyepics the refusal's text never reaches the client (libca drops it). A device
names the PV where its IOC keeps its account of the last refused put, relative to the
device's prefix (``put_refusal_pv = "ERR:MESSAGE"``); the signal reads it after a
refusal and quotes it, so the user gets the IOC's message under both layers.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import ophyd
from ophyd.signal import DEFAULT_CONNECTION_TIMEOUT, DEFAULT_WRITE_TIMEOUT, ReadOnlyError
from ophyd.status import Status
from ophyd.utils.epics_pvs import _wait_for_value

__all__ = [
    "PUT_TIMEOUT",
    "EpicsSignal",
    "EpicsSignalRO",
    "PutRefused",
    "control_layer",
    "install",
]

log = logging.getLogger("trainstamp.signals")

EpicsSignalRO = ophyd.EpicsSignalRO
#: Seconds a put waits for the IOC's answer when the signal sets no ``write_timeout``
#: (put completion waits as long as the IOC takes, as ophyd's does).
PUT_TIMEOUT = 30.0
#: Seconds for reading the device's refusal PV after a refusal (pyepics).
REFUSAL_READ_TIMEOUT = 1.0


class PutRefused(RuntimeError):
    """The IOC refused a put: ``pvname``, ``value``, and ``reason`` (its message)."""

    def __init__(self, pvname: str, value: Any, reason: str) -> None:
        super().__init__(f"{pvname} = {value!r} refused by the IOC: {reason}")
        self.pvname = pvname
        self.value = value
        self.reason = reason


def control_layer() -> str:
    """The ophyd control layer of this process: ``"caproto"`` or ``"pyepics"``."""
    return ophyd.cl.name


def _status_text(code: int) -> str:
    """``ECA_PUTFAIL: Channel write request failed`` for a CA status code."""
    from caproto import CAStatus

    for status in CAStatus:
        if status.value.code_with_severity == code:
            return f"{status.value.name}: {status.value.description}"
    return f"CA status {code}"


# --- caproto ------------------------------------------------------------------------------

_CAPROTO_PREFIX = re.compile(r"^Python exception: \w+ ")


def _error_text(response: Any) -> str:
    """The server's message of an ErrorResponse, without caproto's wrapping."""
    raw = bytes(response.error_message).split(b"\0", 1)[0].decode(errors="replace").strip()
    return _CAPROTO_PREFIX.sub("", raw) or _status_text(response.header.parameter2)


def _install_caproto() -> None:
    import caproto as ca
    from caproto.threading import client

    if getattr(client.VirtualCircuitManager, "_trainstamp_routes_refusals", False):
        return
    process_command = client.VirtualCircuitManager._process_command
    write = client.PV.write
    read = client.PV.read

    def _process_command(self, command):
        if (isinstance(command, ca.ReadNotifyResponse | ca.ReadResponse
                       | ca.WriteNotifyResponse) and command.ioid not in self.ioids):
            # An answer to a request this client no longer holds (a second answer to a
            # refused put, say): caproto would raise KeyError and drop the circuit.
            log.debug("ignoring a response for unknown ioid %d", command.ioid)
            return
        process_command(self, command)
        if not isinstance(command, ca.ErrorResponse):
            return
        request = command.original_request
        if request.command != ca.WriteNotifyRequest.ID:
            return
        info = self.ioids.pop(request.parameter2, None)  # the request's ioid
        if info is None:
            return
        info["response"] = command
        callback = info.get("callback")
        if callback is not None and getattr(callback, "accepts_error_response", False):
            self.user_callback_executor.submit(callback, command)
        elif info.get("event") is None:
            log.warning("%s: put refused by the IOC: %s", info["pv"].name, _error_text(command))
        if info.get("event") is not None:
            info["event"].set()

    def checked_write(self, data, *args, **kwargs):
        try:
            response = write(self, data, *args, **kwargs)
        except KeyError as exc:
            if exc.args != ("response",):
                raise
            # caproto wakes a waiting put when the circuit dies, with no answer to hand
            # back; it then fails with KeyError('response'), which names nothing.
            raise ConnectionError(f"{self.name} = {_plain(data)!r}: the IOC's connection "
                                  "closed before it answered (the IOC died or restarted)"
                                  ) from None
        if isinstance(response, ca.ErrorResponse):
            raise PutRefused(self.name, _plain(data), _error_text(response))
        if isinstance(response, ca.WriteNotifyResponse) and not response.status.success:
            status = response.status
            raise PutRefused(self.name, _plain(data), f"{status.name}: {status.description}")
        return response

    def checked_read(self, *args, **kwargs):
        try:
            return read(self, *args, **kwargs)
        except KeyError as exc:
            if exc.args != ("response",):
                raise
            raise ConnectionError(f"{self.name}: the IOC's connection closed before it "
                                  "answered a read (the IOC died or restarted)") from None

    checked_write.__doc__ = write.__doc__
    checked_read.__doc__ = read.__doc__
    client.VirtualCircuitManager._process_command = _process_command
    client.PV.write = checked_write
    client.PV.read = checked_read
    client.VirtualCircuitManager._trainstamp_routes_refusals = True


def _plain(data: Any) -> Any:
    """A written value as the user gave it (caproto wraps scalars in a tuple)."""
    if isinstance(data, (tuple, list)) and len(data) == 1:
        data = data[0]
    if isinstance(data, bytes):
        return data.rstrip(b"\0").decode(errors="replace")
    return data


def _put_caproto(signal: EpicsSignal, value: Any, timeout: float | None) -> None:
    from caproto import CaprotoTimeoutError

    try:
        signal._write_pv.put(value, wait=True, timeout=timeout)
    except PutRefused as exc:
        raise PutRefused(signal.setpoint_pvname, value, exc.reason) from None
    except CaprotoTimeoutError:
        raise TimeoutError(f"{signal.setpoint_pvname} = {value!r}: no answer from the IOC "
                           f"within {timeout:g} s") from None
    except ConnectionError as exc:  # the circuit died between the put and its answer
        raise ConnectionError(f"{signal.setpoint_pvname} = {value!r}: connection to the IOC "
                              f"lost during the put ({exc})") from None


# --- pyepics ------------------------------------------------------------------------------

_put_status = threading.local()
_pyepics_callback = None  # keeps the ctypes trampoline alive


def _install_pyepics() -> None:
    global _pyepics_callback
    from epics import ca, dbr

    if _pyepics_callback is not None:
        return

    def on_put_event(args, **kwargs):
        # As pyepics' own _onPutEvent, but the status stays readable to the callback
        # (it runs here, in libca's thread, before this returns).
        fcn = args.usr
        if callable(fcn):
            _put_status.value = args.status
            try:
                fcn()
            finally:
                _put_status.value = None

    _pyepics_callback = dbr.make_callback(on_put_event, dbr.event_handler_args)
    ca._CB_PUTWAIT = _pyepics_callback


def _put_pyepics(signal: EpicsSignal, value: Any, timeout: float | None) -> None:
    from epics import dbr
    from epics.pv import PV as PyepicsPV

    done = threading.Event()
    answer: dict[str, int | None] = {}

    def on_done(pvname=None, **kwargs):
        answer["status"] = getattr(_put_status, "value", None)
        done.set()

    # The base class's put: ophyd's wrapper would run the callback on another thread,
    # after the status is gone.
    PyepicsPV.put(signal._write_pv, value, wait=False, callback=on_done, use_complete=True)
    if not done.wait(timeout):
        raise TimeoutError(f"{signal.setpoint_pvname} = {value!r}: no answer from the IOC "
                           f"within {timeout:g} s")
    status = answer.get("status")
    if status != dbr.ECA_NORMAL:
        reason = _status_text(status) if status is not None else "unknown CA status"
        raise PutRefused(signal.setpoint_pvname, value, _with_device_text(signal, reason))


def _refusal_signal(signal: Any) -> Any:
    """The signal of the nearest parent device that names a ``put_refusal_pv``."""
    device = signal.parent
    while device is not None:
        suffix = getattr(type(device), "put_refusal_pv", None)
        if suffix:
            cached = device.__dict__.get("_trainstamp_refusal_signal")
            if cached is None:
                cached = EpicsSignalRO(device.prefix + suffix, name=f"{device.name}_refusal",
                                       string=True)
                device.__dict__["_trainstamp_refusal_signal"] = cached
            return cached
        device = device.parent
    return None


def _read_message(refusal: Any) -> str:
    """The IOC's refusal message. A pyepics read right after the signal connected has
    once given only the message's first character ("V" for "ValueError: ..."); no IOC
    message is one character long, so such a read is taken again, within the bound."""
    deadline = time.monotonic() + REFUSAL_READ_TIMEOUT
    while True:
        text = str(refusal.get(use_monitor=False, timeout=REFUSAL_READ_TIMEOUT)).strip()
        if len(text) != 1 or time.monotonic() >= deadline:
            return text
        time.sleep(0.02)  # a re-read, not a wait for an event: there is none to wait on


def _with_device_text(signal: Any, reason: str) -> str:
    refusal = _refusal_signal(signal)
    if refusal is None:
        return reason
    try:
        refusal.wait_for_connection(timeout=REFUSAL_READ_TIMEOUT)
        text = _read_message(refusal)
    except Exception as exc:  # the refusal stands; only its explanation is missing
        return f"{reason} [no message: reading {refusal.pvname} failed: {exc}]"
    return f"{text} [{reason}; the message is the IOC's {refusal.pvname}]" if text else reason


# --- the signal ---------------------------------------------------------------------------


def install() -> str:
    """Route refused puts to the caller for this process's control layer (idempotent);
    return the layer's name."""
    layer = control_layer()
    if layer == "caproto":
        _install_caproto()
    elif layer == "pyepics":
        _install_pyepics()
    return layer


class EpicsSignal(ophyd.EpicsSignal):
    """ophyd's ``EpicsSignal`` whose puts wait for the IOC and raise :class:`PutRefused`.

    See the module's docstring. Everything else (readback, put completion, tolerances,
    kinds) is ophyd's.
    """

    def put(self, value, force=False, connection_timeout=DEFAULT_CONNECTION_TIMEOUT,
            callback=None, use_complete=None, timeout=DEFAULT_WRITE_TIMEOUT, **kwargs):
        """Put ``value`` and wait for the IOC's answer (``wait`` is always true here).

        Raises :class:`PutRefused` (the IOC's message in it) if the IOC refuses,
        ``TimeoutError`` if it does not answer within ``timeout`` (``write_timeout``,
        else :data:`PUT_TIMEOUT`; unbounded with put completion). With a ``callback``
        the put runs in the background and the callback is called only on success; a
        refusal is then logged (use :meth:`set` for a Status that carries it).
        """
        kwargs.pop("wait", None)
        if callback is not None:
            self._put_in_background(value, force, connection_timeout, callback, use_complete,
                                    timeout)
            return
        if not force:
            self.check_value(value)
        if connection_timeout is DEFAULT_CONNECTION_TIMEOUT:
            connection_timeout = self.connection_timeout
        complete = self._put_complete if use_complete is None else use_complete
        if timeout is DEFAULT_WRITE_TIMEOUT:
            timeout = self.write_timeout
        if timeout is None and not complete:
            timeout = PUT_TIMEOUT
        self.wait_for_connection(timeout=connection_timeout)
        if not self.write_access:
            raise ReadOnlyError(f"No write access to {self.setpoint_pvname}")
        layer = install()
        self.control_layer_log.debug("checked put %s = %r (%s)", self.setpoint_pvname, value,
                                     layer)
        if layer == "pyepics":
            _put_pyepics(self, value, timeout)
        else:
            _put_caproto(self, value, timeout)
        # ophyd's own bookkeeping after a put (EpicsSignal.put).
        old_value = self._setpoint
        self._setpoint = value
        if self.pvname == self.setpoint_pvname:
            timestamp = time.time()
            super(ophyd.EpicsSignal, self).put(value, timestamp=timestamp, force=True)
            self._run_subs(sub_type=self.SUB_SETPOINT, old_value=old_value, value=value,
                           timestamp=timestamp)

    def _put_in_background(self, value, force, connection_timeout, callback, use_complete,
                           timeout) -> None:
        def run() -> None:
            try:
                self.put(value, force=force, connection_timeout=connection_timeout,
                         use_complete=use_complete, timeout=timeout)
            except Exception as exc:
                log.error("%s", exc)
                return
            callback(pvname=self.setpoint_pvname)

        threading.Thread(target=run, name=f"{self.name}-put", daemon=True).start()

    def set(self, value, *, timeout=DEFAULT_WRITE_TIMEOUT, settle_time=None):
        """Put ``value``; the Status fails with :class:`PutRefused` as soon as the IOC
        refuses it. Otherwise it finishes when the put completes (put completion) or the
        readback equals the value (within ``tolerance``), as with ophyd."""
        if timeout is DEFAULT_WRITE_TIMEOUT:
            timeout = self.write_timeout
        status = Status(self, timeout=timeout, settle_time=settle_time)
        started = time.monotonic()

        def run() -> None:
            try:
                self.put(value, timeout=timeout if timeout is not None else DEFAULT_WRITE_TIMEOUT)
                if not self._put_complete:
                    left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
                    _wait_for_value(self, value, timeout=left, atol=self.tolerance,
                                    rtol=self.rtolerance)
            except Exception as exc:
                status.set_exception(exc)
            else:
                status.set_finished()

        threading.Thread(target=run, name=f"{self.name}-set", daemon=True).start()
        return status


def _register_fake() -> None:
    # ophyd.sim.make_fake_device swaps signal classes by exact class; without this, a
    # fake of a device built on this EpicsSignal would hold real CA signals.
    from ophyd.sim import FakeEpicsSignal, fake_device_cache

    fake_device_cache.setdefault(EpicsSignal, FakeEpicsSignal)


_register_fake()
install()
