"""The engine process: runs network jobs (TensorFlow) outside napari's process.

Started by :class:`napari_pneumoseg.engine.Engine` as
``python -m napari_pneumoseg.engine.server ADDRESS`` with the auth key on stdin.
It connects back over a Unix socket, imports TensorFlow once, and then runs
jobs one at a time, sending progress, results and errors as small messages.
Large arrays travel as ``.npy`` files in a temporary folder the client owns.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import traceback
from multiprocessing.connection import Client
from typing import Any


class _Channel:
    """The connection to the client, safe to send on from several threads."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, *message: Any) -> None:
        with self.lock:
            self.conn.send(message)


def serve(address: str, authkey: bytes) -> None:
    conn = Client(address, family="AF_UNIX", authkey=authkey)
    channel = _Channel(conn)
    jobs: "queue.Queue[tuple]" = queue.Queue()
    cancel = threading.Event()

    def listen() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("stop",)
            if message[0] == "cancel":
                cancel.set()
            elif message[0] == "stop":
                cancel.set()
                jobs.put(("stop",))
                return
            else:
                jobs.put(message)

    threading.Thread(target=listen, daemon=True, name="engine-listen").start()

    from . import jobs as job_functions

    info = job_functions.warm_up()
    channel.send("ready", info)
    while True:
        message = jobs.get()
        if message[0] == "stop":
            break
        _, job_id, kind, params = message
        cancel.clear()

        def progress(done: int, total: int, text: str = "", _id=job_id) -> None:
            channel.send("progress", _id, int(done), int(total), str(text))

        def event(data: dict, _id=job_id) -> None:
            channel.send("event", _id, data)

        try:
            result = job_functions.run(kind, params, progress=progress, cancel=cancel, event=event)
        except BaseException as exc:  # every failure goes back to the client as a message
            from ..progress import Cancelled

            if isinstance(exc, Cancelled):
                channel.send("cancelled", job_id)
            else:
                channel.send("error", job_id, type(exc).__name__, str(exc), traceback.format_exc())
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                break
        else:
            channel.send("done", job_id, result)
    conn.close()


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    serve(argv[0], authkey)


if __name__ == "__main__":
    main()
