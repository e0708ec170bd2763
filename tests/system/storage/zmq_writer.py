"""A catalog writer in its own process, fed by bluesky's 0MQ proxy; for the tests.

``python zmq_writer.py OUT_ADDRESS DATA_DIR READY_FILE``: subscribes a
``RemoteDispatcher`` to the proxy's output and writes every run it receives into the
embedded catalog in DATA_DIR with :func:`trainstamp.storage.make_writer`, without a
TimeServer: whatever train stamp the stop document carries came over the wire. A start
document with ``"probe": True`` is not stored; it creates READY_FILE, which tells the
test that this subscriber is connected (0MQ drops what a PUB sends before a SUB joins).
After the first stored run's stop document the process closes the catalog and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from bluesky.callbacks.zmq import RemoteDispatcher

from trainstamp.storage import close_catalog, make_writer, open_catalog


def main(out_address: str, data_dir: str, ready_file: str) -> int:
    client = open_catalog(data_dir)
    try:
        writer = make_writer(client)
        dispatcher = RemoteDispatcher(out_address)

        def route(name: str, doc: dict) -> None:
            if name == "start" and doc.get("probe"):
                Path(ready_file).touch()
                return
            writer(name, doc)
            if name == "stop":
                print(f"stored run {doc['run_start']}", flush=True)
                for task in asyncio.all_tasks(dispatcher.loop):
                    task.cancel()  # its polling task: ends dispatcher.start()

        dispatcher.subscribe(route)
        with contextlib.suppress(asyncio.CancelledError):
            dispatcher.start()  # until the stop document cancels its task
    finally:
        close_catalog(client)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
