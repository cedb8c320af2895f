"""The runtime's recording sink: every queued message lands in the file, in order, after stop too."""

from __future__ import annotations

import queue
import threading

import msgpack
import numpy as np

from metagait_edge.runtime.records import start_recording_writer


def test_the_recording_writer_appends_every_message_and_drains_after_stop(tmp_path):
    path = tmp_path / "rec.msgpack"
    path.write_bytes(msgpack.packb({"kind": "earlier"}))  # a previous run's record stays (append)
    messages: queue.Queue = queue.Queue()
    stop = threading.Event()
    trajs = [np.full((6, 101), k, np.float32) for k in range(3)]
    th = start_recording_writer(path, messages, stop)
    messages.put(("trajectory", 10, "OK", trajs[0]))
    stop.set()  # queued after stop: still written
    messages.put(("trajectory", 11, "DEGRADED", trajs[1]))
    messages.put(("trajectory", 12, "OK", trajs[2]))
    th.join(5)
    assert not th.is_alive() and th.name == "recording"
    records = list(msgpack.Unpacker(open(path, "rb"), raw=False))
    assert records[0] == {"kind": "earlier"}
    assert [(r["t_ns"], r["status"], r["shape"]) for r in records[1:]] == [(10, "OK", [6, 101]), (11, "DEGRADED", [6, 101]),
                                                                            (12, "OK", [6, 101])]
    for r, want in zip(records[1:], trajs):
        assert np.array_equal(np.frombuffer(r["data"], "<f4").reshape(r["shape"]), want)
