"""The train-ID TCP protocol: decimal ASCII integers, one per message.

This is the TimeServer seed's "TCP Server Protocol". The server sends only the trigger
ID as an ASCII decimal number; the consumer converts it with ``strtoull`` and stamps it
with the time of reception. The seed does not say how messages are delimited, so a
consumer accepts both kinds of sender:

- **Terminated.** A message ends in ``\\n``, ``\\r\\n`` or ``\\0``. Our producers (the
  broadcaster, ``trainstamp emulate trains``) always terminate.
- **Unterminated, one ID per write** (as the Trieste bridge in the seed may have done).
  A message then ends when the sender pauses: no byte for ``pause_ns``. The TimeServer
  uses a quarter of ``PERIOD_SET``. Until the first terminator arrives on a connection,
  both rules apply; after it, only terminators end messages. A stream that uses
  terminators never has a message cut at a pause in the middle of its digits.

Two IDs are never glued together. Each ID must come with its own terminator or its
own pause, and every digit run is checked:

- A message of more than 20 digits is bad. 20 digits is ``2**64 - 1``, the largest
  value ``strtoull`` returns.
- In the unterminated mode, a message that is more than one digit longer than the
  last good message is bad. A train ID gains at most one digit from one train to the
  next. A longer message means that two IDs arrived with no pause between them, for
  example because the reader fell behind. If the source really jumped to longer IDs,
  the first of them is refused this way and its successor (exactly one more) is
  taken. Glued IDs never count up by one. This check cannot apply to the first
  message of a connection, which has nothing before it, or to one-digit IDs, which
  glue into two digits.

Train ID 0 means "no train" everywhere in trainstamp. :meth:`MessageSplitter.feed_ids`
reports it as a bad message. :func:`parse_train_id` is only the number syntax, so it
returns 0 as ``strtoull`` would.

Pure functions and classes only: no sockets and no clocks. Times are passed in as
integers of nanoseconds on any clock the caller chooses.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Largest value ``strtoull`` can return without overflow.
MAX_TRAIN_ID = 2**64 - 1
#: Longest digit run of a good message: ``len(str(2**64 - 1))``.
MAX_DIGITS = 20
#: A message longer than this (before its terminator) is bad. 2**64-1 has 20 digits;
#: the rest is room for surrounding whitespace.
MAX_MESSAGE_LEN = 64
_WHITESPACE = b" \t\r\n\v\f"


class BadMessage(ValueError):
    """A message that is not one clean unsigned decimal integer."""


def parse_train_id(message: bytes) -> int:
    """Parse one message the way a careful ``strtoull`` caller does.

    Accepted: optional whitespace, 1 to 20 ASCII digits, optional whitespace.
    Refused with :class:`BadMessage`: empty or whitespace-only, a sign, trailing junk
    (``12abc``), non-ASCII bytes, more than 20 digits, and values above ``2**64 - 1``
    (where ``strtoull`` would saturate and set ``ERANGE``).
    """
    body = message.strip(_WHITESPACE)
    if not body:
        raise BadMessage("empty message")
    if len(body) > MAX_MESSAGE_LEN or not body.isdigit():
        raise BadMessage(f"not an unsigned decimal integer: {_show(body)}")
    if len(body) > MAX_DIGITS:
        raise BadMessage(f"{len(body)} digits {_show(body)}: longer than any 64-bit value")
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

    ``feed(data, t_ns)`` yields each complete message without its terminator, or a
    :class:`BadMessage`. Bad messages are yielded, not raised. ``t_ns`` is the time the
    bytes were received. After each yielded item, :attr:`t_ns` holds the receive time
    of that message's last byte, which is the time to stamp it with.

    With ``pause_ns`` set, the pause rule of the module docstring applies. A pending
    unterminated message ends when a later ``feed`` comes more than ``pause_ns``
    after its last byte, or when :meth:`flush` is called after :attr:`deadline_ns`.
    A reader calls :meth:`flush` when its read times out at that deadline. Without
    ``pause_ns``, or when no times are given, only terminators end messages.

    A message that grows past ``max_len`` bytes without an end is reported once as
    an oversize :class:`BadMessage`. The rest of it, up to the next end, is
    discarded, so a 1 MB line never sits in memory.
    """

    def __init__(self, max_len: int = MAX_MESSAGE_LEN, *, pause_ns: int | None = None) -> None:
        if pause_ns is not None and pause_ns <= 0:
            raise ValueError(f"pause_ns {pause_ns} must be positive")
        self.max_len = max_len
        self.pause_ns = pause_ns
        #: Receive time of the last byte of the message just yielded (None if unknown).
        self.t_ns: int | None = None
        #: True once a terminator has been seen; from then on pauses end nothing.
        self.terminated = False
        self._buf = bytearray()
        self._discarding = False
        self._last_byte_ns: int | None = None
        self._prev_digits: int | None = None  # length of the last good pause-ended message
        self._suspect: int | None = None  # value of the last one the glue rule refused
        self._after_pause = False  # the last message ended by a pause

    # --- the pause rule ----------------------------------------------------------------

    @property
    def pausing(self) -> bool:
        """Whether a pause can end a message now (``pause_ns`` set, no terminator yet)."""
        return self.pause_ns is not None and not self.terminated

    @property
    def deadline_ns(self) -> int | None:
        """When the pending message ends by the pause rule; None if nothing is pending."""
        if not self.pausing or self._last_byte_ns is None:
            return None
        if not (self._buf or self._discarding):
            return None
        assert self.pause_ns is not None
        return self._last_byte_ns + self.pause_ns

    def flush(self, t_ns: int) -> Iterator[bytes | BadMessage]:
        """End the pending message if the sender has paused by ``t_ns``."""
        deadline = self.deadline_ns
        if deadline is not None and t_ns >= deadline:
            yield from self._end_by_pause()

    def _end_by_pause(self) -> Iterator[bytes | BadMessage]:
        self.t_ns = self._last_byte_ns
        self._after_pause = True
        if self._discarding:  # an oversize message ends here; it was reported already
            self._discarding = False
            self._buf.clear()
            return
        body = bytes(self._buf).strip(_WHITESPACE)
        self._buf.clear()
        if body and body.isdigit() and len(body) <= MAX_DIGITS and not self._plausible(body):
            yield BadMessage(f"{len(body)} digits {_show(body)} after a {self._prev_digits}-"
                             "digit ID: IDs sent without terminator and without a pause "
                             "between them")
            return
        if body:
            yield body

    def _plausible(self, body: bytes) -> bool:
        """The glue rule: at most one digit longer than the last good message. A
        longer one is taken only if it follows a rejected one as its successor
        (the source really moved on to longer IDs); glued IDs never do."""
        prev, value = self._prev_digits, int(body)
        if prev is None or len(body) <= prev + 1 or value == (self._suspect or -2) + 1:
            self._prev_digits, self._suspect = len(body), None
            return True
        self._suspect = value
        return False

    # --- splitting ---------------------------------------------------------------------

    def feed(self, data: bytes, t_ns: int | None = None) -> Iterator[bytes | BadMessage]:
        if t_ns is not None:
            yield from self.flush(t_ns)
        pos = 0
        while True:
            end = _find_terminator(data, pos)
            if not self._discarding:
                chunk = data[pos:] if end < 0 else data[pos:end]
                self._buf += chunk[: self.max_len + 1 - len(self._buf)]
                if len(self._buf) > self.max_len:
                    self._buf.clear()
                    self._discarding = True
                    self.t_ns = t_ns
                    yield BadMessage(f"message longer than {self.max_len} bytes")
            if end < 0:
                if pos < len(data):
                    self._last_byte_ns = t_ns
                return
            self.terminated = True
            self.t_ns = t_ns
            if self._discarding:
                self._discarding = False  # the oversize message ends here
            elif self._after_pause and not bytes(self._buf).strip(_WHITESPACE):
                pass  # a late terminator of the message the pause already ended
            else:
                yield bytes(self._buf)
            self._after_pause = False
            self._buf.clear()
            pos = end + 1

    def feed_ids(self, data: bytes, t_ns: int | None = None) -> Iterator[int | BadMessage]:
        """Like :meth:`feed`, with each message parsed and checked as a train ID.

        Yields a train ID for each good message and a :class:`BadMessage` for each
        bad one: the syntax errors of :func:`parse_train_id`, and ID 0, which means
        "no train". This is the one parse path of every train-ID stream in
        trainstamp: the ``tcp://`` source and
        :class:`~trainstamp.timing.feed.TrainFeed` both use it.
        """
        return self._ids(self.feed(data, t_ns))

    def flush_ids(self, t_ns: int) -> Iterator[int | BadMessage]:
        """Like :meth:`flush`, with the message parsed as in :meth:`feed_ids`."""
        return self._ids(self.flush(t_ns))

    @staticmethod
    def _ids(messages: Iterator[bytes | BadMessage]) -> Iterator[int | BadMessage]:
        for msg in messages:
            if isinstance(msg, BadMessage):
                yield msg
                continue
            try:
                value = parse_train_id(msg)
            except BadMessage as exc:
                yield exc
                continue
            if value == 0:
                yield BadMessage("train ID 0: 0 means 'no train'")
                continue
            yield value

    def finish(self) -> Iterator[bytes | BadMessage]:
        """The stream has ended (the connection closed or was reset).

        Before any terminator the end of the stream ends the pending message, as a
        pause would. After a terminator a pending partial message is cut off: one bad
        message. Then the splitter starts afresh, as :meth:`reset` leaves it.
        """
        if self.pausing:
            yield from self._end_by_pause()
        elif self._buf:
            yield BadMessage(f"stream ended inside a message {_show(bytes(self._buf))}")
        self.reset()

    def finish_ids(self) -> Iterator[int | BadMessage]:
        """Like :meth:`finish`, with the message parsed as in :meth:`feed_ids`."""
        return self._ids(self.finish())

    def reset(self) -> bytes:
        """Forget a partial message (after a disconnect); return what was pending."""
        pending = b"" if self._discarding else bytes(self._buf)
        self._buf.clear()
        self._discarding = False
        self._last_byte_ns = None
        self._after_pause = False
        self.terminated = False
        self._prev_digits = self._suspect = None
        return pending


def _find_terminator(data: bytes, start: int) -> int:
    nl = data.find(b"\n", start)
    nul = data.find(b"\0", start)
    if nl < 0:
        return nul
    if nul < 0:
        return nl
    return min(nl, nul)
