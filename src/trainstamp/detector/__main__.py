"""``python -m trainstamp.detector``: the detector IOC (same as ``trainstamp ioc detector``)."""

import sys

from trainstamp.detector.cli import ioc

sys.exit(ioc(sys.argv[1:]))
