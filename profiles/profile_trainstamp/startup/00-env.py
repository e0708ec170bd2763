"""trainstamp profile, step 0: the beamline configuration and the client environment.

Finds the beamline: the one ``trainstamp up`` runs on this data directory (it publishes
the ports it really uses in ``<data dir>/beamline.running.json``), else the configuration
file (``$TRAINSTAMP_CONFIG`` or the packaged default). Then it puts its EPICS Channel Access client environment in place before any ophyd signal
exists (the CA client reads it once). ``TRAINSTAMP_KEEP_EPICS_ENV=1`` keeps an
``EPICS_CA_*`` environment that is already set instead. Without a display, matplotlib
uses the non-interactive Agg backend, so nothing here needs a screen.
"""

from trainstamp._runtime import session_config
from trainstamp.session import apply_client_env, choose_matplotlib_backend

beamline_config = session_config()
apply_client_env(beamline_config)
choose_matplotlib_backend()
