"""The TimeServer: the single source of train IDs for everything in trainstamp."""
