"""``python -m trainstamp.timing`` runs the TimeServer IOC (same as ``trainstamp ioc timeserver``)."""

import sys

from trainstamp.timing.cli import ioc

sys.exit(ioc(sys.argv[1:]))
