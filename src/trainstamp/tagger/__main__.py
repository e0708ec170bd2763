"""``python -m trainstamp.tagger``: the tagger server (same as ``trainstamp ioc tagger``)."""

import sys

from trainstamp.tagger.cli import ioc

sys.exit(ioc())
