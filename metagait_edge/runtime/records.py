"""What the runtime keeps about its work: each published trajectory and running counters."""

from __future__ import annotations

from dataclasses import dataclass, field
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
