"""trainstamp profile, step 1: the RunEngine, live feedback and progress bars.

``RE`` is the session's RunEngine (bluesky-queueserver requires it to be defined
here). ``bec`` is a BestEffortCallback that prints tables always and plots only when a
display is available. Long statuses show tqdm progress bars in an interactive session.
"""

from bluesky import RunEngine

from trainstamp.session import install_progress_bars, make_best_effort_callback

RE = RunEngine()
bec = make_best_effort_callback()
RE.subscribe(bec)
install_progress_bars(RE)
