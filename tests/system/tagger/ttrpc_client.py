"""A user's script with Swabian's ``timetaggerrpc`` client, run as shipped.

Run by test_tagger_timetaggerrpc.py in its own interpreter (the client registers its
numpy converters in Pyro5 process-wide). Usage: ``ttrpc_client.py HOST PORT``; prints
one JSON line describing what it got.
"""

import json
import sys
import time

import numpy as np
from TimeTaggerRPC import client

host, port = sys.argv[1], int(sys.argv[2])
TT = client.createProxy(host=host, port=port)
out = {"enums": {name: {m.name: int(m.value) for m in getattr(TT, name)}
                 for name in ("ChannelEdge", "CoincidenceTimestamp", "Resolution",
                              "GatedChannelInitial", "TagType")}}

tagger = TT.createTimeTagger()
tagger.setTestSignal([1, 2], True)
out["serial"] = tagger.getSerial()
out["rising"] = tagger.getChannelList(TT.ChannelEdge.StandardRising)

corr = TT.Correlation(tagger, 1, 2, binwidth=10, n_bins=1000)
rate = TT.Countrate(tagger, np.array([1, 2]))  # sent by the client as NPY, too
coinc = TT.Coincidence(tagger, [1, 2], coincidenceWindow=1000,
                       timestamp=TT.CoincidenceTimestamp.Last)
gated = TT.GatedChannel(tagger, 1, 3, 4, initial=TT.GatedChannelInitial.Open)
sync = TT.SynchronizedMeasurements(tagger)
sync_tagger = sync.getTagger()
synced = TT.Countrate(sync_tagger, [coinc.getChannel(), gated.getChannel()])
out["sync_channels"] = sync_tagger.getChannelList(TT.ChannelEdge.Rising)

corr.startFor(int(1e12), clear=True)  # 1 s of tagger time
rate.startFor(int(1e12), clear=True)
sync.startFor(int(1e12), clear=True)
deadline = time.monotonic() + 60
while corr.isRunning() or rate.isRunning() or sync.isRunning():
    if time.monotonic() > deadline:
        sys.exit("the measurements did not finish within 60 s")
    time.sleep(0.1)

data, index, rates = corr.getData(), corr.getIndex(), rate.getData()
for name, arr in (("data", data), ("index", index), ("rates", rates),
                  ("synced", synced.getData())):
    assert isinstance(arr, np.ndarray), (name, type(arr))
    out[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "values": arr.tolist()}
out["duration_ps"] = corr.getCaptureDuration()
out["freed"] = TT.freeTimeTagger(tagger)
print(json.dumps(out))
