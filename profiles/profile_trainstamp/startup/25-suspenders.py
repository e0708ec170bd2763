# Startup files share one namespace: names from earlier files are defined here.
# ruff: noqa: F821
"""trainstamp profile, step 2b: a train-ID outage suspends a run instead of stamping it.

Two bluesky suspenders watch the TimeServer: its STATE (not ON: the IOC lost its
source) and its ``ticking`` signal (no fresh valid tick: the IOC is silent, dead or its
ID is in alarm). While either is tripped, the RunEngine holds the plan, and it resumes
from the last checkpoint once the TimeServer has been back for a second (see
:mod:`trainstamp.timing.suspenders`). ``RE.clear_suspenders()`` removes them.
"""

from trainstamp.timing.suspenders import install_timeserver_suspenders

timeserver_suspenders = install_timeserver_suspenders(
    RE, devices[beamline_config.timeserver.name])
