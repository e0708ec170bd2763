"""``python -m trainstamp`` is the same as the ``trainstamp`` command."""

from trainstamp.cli import main

raise SystemExit(main())
