"""The detector IOC (:class:`Team1kIOC`), one caproto ``SubGroup`` per concern.

| Module | Part | PVs |
|---|---|---|
| ``_team1k.py`` | :class:`Team1kIOC`: start-up, health (STATUS), refusals | STATUS, ERR:* |
| ``_settings.py`` | :class:`DetectorSettings` | CMD:* (but CMD:CAPTURE), their readbacks, ACQUIRING |
| ``_capture.py`` | :class:`Capture` | CMD:CAPTURE, CAPTURE:* |
| ``_preview.py`` | :class:`Preview` | IMAGE (CA), IMAGE:* |
| ``_pva_image.py`` | :class:`PvaImage` | IMAGE (PVA, an NTNDArray), IMAGE:PVA_PERIOD |
| ``_links.py`` | :class:`ReceiverCounters`, :class:`RegisterLink` | FRAME_RATE, FRAME_COUNT, LAST:*, RX:*; REG:* |
| ``_peripherals.py`` | :class:`Bellow`, :class:`Power` | BELLOW:*, POWER:* |
| ``_base.py`` | :class:`DetectorGroup`, :func:`polled`: what the parts share | |

Each part polls on its own period (capture 0.1 s, counters 0.5 s, health and
peripherals 2 s, the preview every IMAGE:PERIOD), and only after the start-up.
"""

from trainstamp.detector._ioc._preview import preview_due
from trainstamp.detector._ioc._team1k import Team1kIOC

__all__ = ["Team1kIOC", "preview_due"]
