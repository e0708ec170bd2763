"""The train-ID TCP protocol: decimal ASCII integers, one per message.

This is the TimeServer seed's "TCP Server Protocol". The server sends only the trigger
ID as an ASCII decimal number; the consumer converts it with ``strtoull`` and stamps it
with the time of reception. A message ends in ``\\n``, ``\\r\\n`` or ``\\0``.

Pure functions and classes only: no sockets, no clocks.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Largest value ``strtoull`` can return without overflow.
MAX_TRAIN_ID = 2**64 - 1
#: A message longer than this (before its terminator) is bad. 2**64-1 has 20 digits;
#: the rest is room for surrounding whitespace.
MAX_MESSAGE_LEN = 64
_WHITESPACE = b" \t\r\n\v\f"


class BadMessage(ValueError):
    """A message that is not one clean unsigned decimal integer."""


def parse_train_id(message: bytes) -> int:
    """Parse one message the way a careful ``strtoull`` caller does.

    Accepted: optional whitespace, one or more ASCII digits, optional whitespace.
    Refused with :class:`BadMessage`: empty or whitespace-only, a sign, trailing junk
    (``12abc``), non-ASCII bytes, and values above ``2**64 - 1`` (where ``strtoull``
    would saturate and set ``ERANGE``).
    """
    body = message.strip(_WHITESPACE)
    if not body:
        raise BadMessage("empty message")
    if len(body) > MAX_MESSAGE_LEN or not body.isdigit():
        raise BadMessage(f"not an unsigned decimal integer: {_show(body)}")
    value = int(body)
    if value > MAX_TRAIN_ID:
        raise BadMessage(f"train ID {_show(body)} is larger than 2**64-1")
    return value


def encode_train_id(train_id: int) -> bytes:
    """One message for ``train_id``: its decimal digits and a newline."""
    if not 0 <= train_id <= MAX_TRAIN_ID:
        raise ValueError(f"train ID {train_id} outside 0..2**64-1")
    return b"%d\n" % train_id


def _show(body: bytes, limit: int = 40) -> str:
    text = repr(body[:limit])
    return text + ("..." if len(body) > limit else "")


class MessageSplitter:
    """Split a byte stream into messages, bounding memory on hostile input.

    ``feed(data)`` yields each complete message, without its terminator. A message
    that grows past ``max_len`` bytes without a terminator is reported once as an
    oversize :class:`BadMessage` (yielded, not raised) and the rest of it, up to the
    next terminator, is discarded, so a 1 MB line never sits in memory.
    """

    def __init__(self, max_len: int = MAX_MESSAGE_LEN) -> None:
        self.max_len = max_len
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> Iterator[bytes | BadMessage]:
        pos = 0
        while True:
            end = _find_terminator(data, pos)
            if not self._discarding:
                chunk = data[pos:] if end < 0 else data[pos:end]
                self._buf += chunk[: self.max_len + 1 - len(self._buf)]
                if len(self._buf) > self.max_len:
                    self._buf.clear()
                    self._discarding = True
                    yield BadMessage(f"message longer than {self.max_len} bytes")
            if end < 0:
                return
            if self._discarding:
                self._discarding = False  # the oversize message ends here
            else:
                yield bytes(self._buf)
            self._buf.clear()
            pos = end + 1

    def feed_ids(self, data: bytes) -> Iterator[int | BadMessage]:
        """Like :meth:`feed`, with each message parsed: yields a train ID for each good
        message and a :class:`BadMessage` (yielded, not raised) for each bad one."""
        for msg in self.feed(data):
            if isinstance(msg, BadMessage):
                yield msg
                continue
            try:
                yield parse_train_id(msg)
            except BadMessage as exc:
                yield exc

    def reset(self) -> bytes:
        """Forget a partial message (after a disconnect); return what was pending."""
        pending = bytes(self._buf)
        self._buf.clear()
        self._discarding = False
        return pending


def _find_terminator(data: bytes, start: int) -> int:
    nl = data.find(b"\n", start)
    nul = data.find(b"\0", start)
    if nl < 0:
        return nul
    if nul < 0:
        return nl
    return min(nl, nul)
