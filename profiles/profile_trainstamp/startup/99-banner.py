# Startup files share one namespace: names from earlier files are defined here.
# ruff: noqa: F821
"""trainstamp profile, last step: say what the session holds."""

from trainstamp.session import banner

print(banner(devices, db))
