"""PV suffixes of the TimeServer IOC: the one source of names for the IOC and the device.

The IOC serves ``<prefix><suffix>`` for each name here, and the ophyd ``TimeServer``
device builds its components from the same constants.
"""

from __future__ import annotations


class PV:
    """TimeServer PV suffixes (append to the IOC prefix, e.g. ``TS:`` + ``PV.ID``)."""

    ID = "ID"  #: DOUBLE, train ID (exact to 2**53); EPICS timestamp = tick time
    SEC = "SEC"  #: DOUBLE, UNIX seconds of the tick
    FRAC = "FRAC"  #: DOUBLE, fraction of the second in attoseconds (exact for ns ticks)
    PERIOD = "PERIOD"  #: DOUBLE, averaged period, us
    PERIOD_ACTUAL = "PERIOD_ACTUAL"  #: DOUBLE, mean period over the last 100 ID changes, ms
    PERIOD_SET = "PERIOD_SET"  #: DOUBLE, period setpoint, ms (writable)
    SOURCE = "SOURCE"  #: CHAR waveform string (max 256), source URI (writable while UNKNOWN)
    STATE = "STATE"  #: ENUM INIT / ON / UNKNOWN
    RESET = "RESET"  #: LONG, write 1 to reset (-> INIT); 0 does nothing
    MISSED_PERIODS = "MISSED_PERIODS"  #: LONG, periods without an ID before UNKNOWN (writable)
    STATUS = "STATUS"  #: CHAR waveform string (max 256), readable status text
    BAD_MESSAGES = "BAD_MESSAGES"  #: LONG, count of rejected messages
    DISCONTINUITIES = "DISCONTINUITIES"  #: LONG, count of jumps in the ID
    #: CHAR waveform string (max 256), ``tcp://host:port`` of the tick broadcaster as
    #: it listens (the real port), "" while it does not
    BROADCAST_URI = "BROADCAST_URI"

    ALL = (ID, SEC, FRAC, PERIOD, PERIOD_ACTUAL, PERIOD_SET, SOURCE, STATE, RESET,
           MISSED_PERIODS, STATUS, BAD_MESSAGES, DISCONTINUITIES, BROADCAST_URI)
    #: The PVs a client may write.
    WRITABLE = (PERIOD_SET, SOURCE, RESET, MISSED_PERIODS)


#: Enum strings of ``STATE``, in value order (matches :class:`~trainstamp.timing.State`).
STATE_STRINGS = ("INIT", "ON", "UNKNOWN")
#: Default PV prefix of the IOC.
DEFAULT_PREFIX = "TS:"
#: Default TCP port of the tick broadcaster (and of ``trainstamp emulate trains``).
DEFAULT_BROADCAST_PORT = 5055
