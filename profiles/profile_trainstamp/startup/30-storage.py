# Startup files share one namespace: names from earlier files are defined here.
# ruff: noqa: F821
"""trainstamp profile, step 3: the run catalog, and train-ID stamping for every plan.

``db`` is a Tiled client on the run catalog: the embedded catalog in
``$TRAINSTAMP_DATA_DIR`` (``./data``) or the Tiled server in ``$TRAINSTAMP_TILED_URI``.
The RunEngine writes every run into it; stop documents get ``train_id_end``.
``stamp`` is the TimeServer's TrainStamp, and a RunEngine preprocessor makes every plan
(bluesky's own ``count`` and ``scan`` included) keep the train-ID contract.
"""

from trainstamp.plans import TrainStamp, stamp_wrapper
from trainstamp.session import open_session_catalog

_timeserver = devices[beamline_config.timeserver.name]
db = open_session_catalog(RE, _timeserver)
stamp = TrainStamp(_timeserver)
RE.preprocessors.append(lambda plan: stamp_wrapper(plan, stamp))
