# Startup files share one namespace: names from earlier files are defined here.
# ruff: noqa: F821
"""trainstamp profile, step 2: the devices named in the beamline configuration.

The TimeServer, the TEAM1k detector and the time tagger (default names
``timeserver``, ``det``, ``tagger``) are created and connect in the background. The
profile waits a short while (``TRAINSTAMP_CONNECT_TIMEOUT`` s, 2 by default) and
says which IOCs answered; a device whose IOC is down still exists and connects when
the IOC comes up, so the session starts without the beamline.
"""

from trainstamp.session import make_devices, report_connections

devices = make_devices(beamline_config)
globals().update(devices)
connections = report_connections(devices, beamline_config)  # {name: connected}
