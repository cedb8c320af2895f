"""What the runtime keeps about its work: each published trajectory, running counters, and the optional
recording of every published message (``sinks.recording``)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np


@dataclass
class PublishedRecord:
    t_ns: int  # header t_ns of the trajectory (the key a subscriber sees)
    ring_seq: int  # IMU sample that completed the cycle
    frame_seq: int  # its serial frame seq (-1 when unknown)
    personalized: bool
    status: str
    cycle_index: int
    trajectory: np.ndarray
    # Monotonic seconds of each stage, for the latency breakdown: the frame reached the ring, the worker
    # took it, the reference was generated, the message was queued for the publisher.
    stages_s: tuple = ()


@dataclass
class RuntimeStats:
    samples: int = 0
    nonfinite_samples: int = 0
    cycles: int = 0
    published: int = 0
    personalized: int = 0
    holds: int = 0
    dropped_samples: int = 0
    last_status: str = "HOLD"
    last_reason: str = "starting"
    worker_errors: int = 0
    gen_ms: List[float] = field(default_factory=list)


def start_recording_writer(path: Path, messages: "queue.Queue", stop: threading.Event) -> threading.Thread:
    """Append each ``(kind, t_ns, status, trajectory)`` of ``messages`` to ``path`` as one msgpack map, on a
    thread of its own (the control path only queues); the thread drains the queue after ``stop``."""
    import msgpack

    fh = open(path, "ab")

    def writer() -> None:
        while not stop.is_set() or not messages.empty():
            try:
                kind, t_ns, status, traj = messages.get(timeout=0.1)
            except queue.Empty:
                continue
            fh.write(msgpack.packb({"kind": kind, "t_ns": t_ns, "status": status, "shape": list(traj.shape),
                                    "data": traj.astype("<f4").tobytes()}))
        fh.close()

    th = threading.Thread(target=writer, name="recording", daemon=True)
    th.start()
    return th
