"""trainstamp profile, step 0: the beamline configuration and the client environment.

Loads the beamline configuration (``$TRAINSTAMP_CONFIG`` or the packaged default) and
puts its EPICS Channel Access client environment in place before any ophyd signal
exists (the CA client reads it once). ``TRAINSTAMP_KEEP_EPICS_ENV=1`` keeps an
``EPICS_CA_*`` environment that is already set instead. Without a display, matplotlib
uses the non-interactive Agg backend, so nothing here needs a screen.
"""

from trainstamp.config import load_config
from trainstamp.session import apply_client_env, choose_matplotlib_backend

beamline_config = load_config()
apply_client_env(beamline_config)
choose_matplotlib_backend()
