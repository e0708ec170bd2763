"""The RunEngine form of the bridge: a document callback that feeds a :class:`Bridge`.

Subscribed to a RunEngine (``RE.subscribe(BridgeCallback(bridge, detectors=[det]))``),
it reads the event pages of :func:`~trainstamp.plans.train_fly`'s streams as they are
collected and adds one part per train and stream:

- ``timeserver`` (a stream with ``<ts>_tick_time``): source
  ``TRAINSTAMP/TIMESERVER/<ts>``, keys ``trainId`` and ``tickTime`` (UNIX s); its time is
  the tick;
- ``detector`` (a stream with ``<det>_frame_number``): source
  ``TRAINSTAMP/DET/<det>:daqOutput``, keys ``data.trainId`` (the packet header's),
  ``data.frameNumber``, ``data.complete`` and ``data.image``, the frame itself, read
  from the run's capture file (the detector's ``CAPTURE:FULL_PATH``) only when the train
  is sent;
- ``tagger`` (a stream with ``<prefix>_first_train_id``, e.g. ``tagger_counts``):
  source ``TRAINSTAMP/TAGGER/<device>:output``, keys ``<slot>.counts``, ``.width`` (ps),
  ``.firstTrainId``, ``.lastTrainId``.

A train is sent once it has every stream's part; the ticks that start before and end
after the other streams are dropped as incomplete. Rows with a train ID the contract
does not trust (not above 0, status neither ``OK`` nor ``EXACT``) are left out. The
callback does only dictionary work: it never reads a file or waits on the client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from trainstamp.bridge._core import Part, detector_source, tagger_source, timeserver_source
from trainstamp.bridge._server import Bridge, CaptureFrames
from trainstamp.trainid import TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY

log = logging.getLogger(__name__)

__all__ = ["BridgeCallback"]

_TRUSTED = {"OK", "EXACT"}


def camel(key: str) -> str:
    """``first_train_id`` -> ``firstTrainId``."""
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _ns(t: float) -> int:
    return round(float(t) * 1e9)


class _Stream:
    """How the rows of one stream become parts: its source and its keys."""

    def __init__(self, source: str, keys: dict[str, str], time_key: str | None = None,
                 image_of: str | None = None) -> None:
        self.source = source
        self.keys = keys  # data key in the document -> key in the message
        self.time_key = time_key
        self.image_of = image_of  # the detector whose frame is the lazy "data.image"


def classify(data_keys: Iterable[str]) -> _Stream | None:
    """The bridge's view of a stream from its data keys (``None``: not a fly stream)."""
    keys = [k for k in data_keys if k not in (TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY)]
    for k in keys:
        if k.endswith("_tick_time"):
            ts = k[: -len("_tick_time")]
            return _Stream(timeserver_source(ts), {TRAIN_ID_KEY: "trainId", k: "tickTime"},
                           time_key=k)
    for k in keys:
        if k.endswith("_frame_number"):
            det = k[: -len("_frame_number")]
            out = {TRAIN_ID_KEY: "data.trainId", k: "data.frameNumber"}
            if f"{det}_complete" in keys:
                out[f"{det}_complete"] = "data.complete"
            return _Stream(detector_source(det), out, image_of=det)
    for k in keys:
        m = re.fullmatch(r"(.+)_first_train_id", k)
        if m and f"{m[1]}_last_train_id" in keys:
            prefix = m[1]
            device, _, slot = prefix.rpartition("_")
            device, slot = (device, slot) if device else (prefix, "data")
            out = {key: f"{slot}.{camel(key[len(prefix) + 1:])}" for key in keys
                   if key.startswith(prefix + "_")}
            return _Stream(tagger_source(device), out)
    return None


class BridgeCallback:
    """A RunEngine callback that turns a fly run's event pages into bridge trains.

    ``detectors`` are the ``Team1k`` devices of the run (for the path of their capture
    file); without one a detector's trains go without ``data.image`` (counted in
    ``frames_missing``).
    """

    def __init__(self, bridge: Bridge, *, detectors: Iterable[Any] = ()) -> None:
        self.bridge = bridge
        self.detectors = {d.name: d for d in detectors}
        self._streams: dict[str, _Stream] = {}  # descriptor uid -> stream
        self._frames: dict[str, CaptureFrames] = {}

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        handler = getattr(self, f"_{name}", None)
        if handler is not None:
            handler(doc)

    def _start(self, doc: dict[str, Any]) -> None:
        self.bridge.reset(set(), restart=True)  # a new run: its descriptors name the sources
        for frames in self._frames.values():
            frames.close()
        self._streams.clear()
        self._frames = {name: CaptureFrames(self._capture_path(det))
                        for name, det in self.detectors.items()}

    @staticmethod
    def _capture_path(det: Any) -> Any:
        """The run's capture file: the detector is staged before the run opens, so its
        ``CAPTURE:FULL_PATH`` names the file now (asked once per run, here, so a frame
        read after the run still finds it); else asked at the first frame read."""
        try:
            path = det.capture_full_path.get()
        except Exception as exc:  # not connected yet: ask again when a frame is read
            log.warning("%s: capture path not known at the start of the run: %s", det.name, exc)
            path = None
        return path or det.capture_full_path.get

    def _descriptor(self, doc: dict[str, Any]) -> None:
        stream = classify(doc.get("data_keys", {}))
        if stream is None:
            return
        self._streams[doc["uid"]] = stream
        self.bridge.reset({s.source for s in self._streams.values()}, restart=True)

    def _event(self, doc: dict[str, Any]) -> None:
        self._event_page({"descriptor": doc["descriptor"], "time": [doc["time"]],
                          "data": {k: [v] for k, v in doc["data"].items()}})

    def _event_page(self, doc: dict[str, Any]) -> None:
        stream = self._streams.get(doc["descriptor"])
        if stream is None:
            return
        data = doc["data"]
        ids = data.get(TRAIN_ID_KEY, [])
        statuses = data.get(TRAIN_ID_STATUS_KEY, ["OK"] * len(ids))
        times = doc["time"]
        frames = self._frames.get(stream.image_of) if stream.image_of else None
        for i, (tid, status) in enumerate(zip(ids, statuses, strict=True)):
            tid = int(tid)
            if tid <= 0 or status not in _TRUSTED:
                continue
            values = {out: data[key][i] for key, out in stream.keys.items() if key in data}
            t = data[stream.time_key][i] if stream.time_key else times[i]
            lazy = {}
            if stream.image_of:
                if frames is not None:
                    lazy["data.image"] = lambda f=frames, t=tid: f.frame(t)
                else:
                    lazy["data.image"] = lambda: None
            self.bridge.add(stream.source, tid, Part(values, _ns(t), lazy))

    def _stop(self, doc: dict[str, Any]) -> None:
        self.bridge.flush()
