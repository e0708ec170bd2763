"""trainstamp: train-ID stamped Bluesky integration for beamline timing, a TEAM1k-style
X-ray detector and a Swabian-style time tagger.

Subpackages, one per concern:

- :mod:`trainstamp.timing`   the TimeServer: train-ID sources, IOC, broadcaster, device
- :mod:`trainstamp.detector` the TEAM1k detector: UDP protocol, emulator, receiver, IOC
- :mod:`trainstamp.tagger`   the time tagger: tag stream, measurement engine, Pyro5, IOC
- :mod:`trainstamp.storage`  the Tiled catalog the RunEngine writes into
- :mod:`trainstamp.plans`    Bluesky plans whose every Event carries ``train_id``
- :mod:`trainstamp.testing`  helpers for tests: free ports, CA environments, IOC subprocesses
"""

__version__ = "0.1.0"
