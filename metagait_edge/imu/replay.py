"""Recorded IMU samples back into a stream, in real time, on an absolute schedule.

- :func:`load_hugadb_samples`: a HuGaDB v1 text recording as raw counts (through ``data.hugadb``);
- :func:`stream_frames`: samples as wire frames into any byte sink (``metagait-edge imu-sim``);
- :class:`FileImuSource`: a recorded file pushed into a consumer's ``push_imu`` (the runtime's ``replay``
  and ``rosbag`` sources), a real-time stand-in for a serial port.

Recorded files are read by kind through :data:`ROW_READERS`. HuGaDB text (``replay``) is read here;
rosbag2 bags (``rosbag``) are read by :mod:`metagait_edge.ros.bag`, which registers its reader when it is
imported: ROS sits above the IMU domain and the runtime, which never import it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np

from metagait_edge.imu.protocol import encode_ascii_row, encode_frame


def load_hugadb_samples(path: str):
    """(int16 [N, 36] IMU counts, int [N, 3] EMG_r/EMG_l/act, sample rate) of a HuGaDB v1 file."""
    from metagait_edge.data import hugadb

    rec = hugadb.parse_file(path)
    extra = np.concatenate([rec.emg.astype(np.int64), rec.act.astype(np.int64)[:, None]], axis=1)
    return rec.raw, extra, rec.sample_rate_hz


#: Readers of recorded IMU files by source kind: path -> int16 [N, 36] raw counts.
ROW_READERS: Dict[str, Callable[[str], np.ndarray]] = {"replay": lambda path: load_hugadb_samples(path)[0]}


def register_row_reader(kind: str, reader: Callable[[str], np.ndarray]) -> None:
    """Make ``kind`` sources readable by :class:`FileImuSource` (``reader(path) -> int16 [N, 36]``)."""
    ROW_READERS[kind] = reader


def read_rows(kind: str, path) -> np.ndarray:
    reader = ROW_READERS.get(kind)
    if reader is None:
        hint = " (import metagait_edge.ros.bag first: it reads rosbag2 bags)" if kind == "rosbag" else ""
        raise ValueError(f"no reader for recorded IMU source kind {kind!r}{hint}; known: {', '.join(sorted(ROW_READERS))}")
    return reader(str(path))


@dataclass(frozen=True)
class StreamSummary:
    frames: int
    bytes: int
    seconds: float
    target_rate_hz: float

    @property
    def rate_hz(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def stream_frames(
    write: Callable[[bytes], object],
    samples,
    rate_hz: float,
    fmt: str = "binary",
    *,
    extra=None,
    loop: bool = False,
    max_frames: Optional[int] = None,
    clock: Callable[[], float] = None,
    sleep: Callable[[float], None] = None,
    on_frame: Optional[Callable[[int], None]] = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> StreamSummary:
    """Write ``samples`` (int16 [N, 36]) as frames at ``rate_hz`` on an absolute schedule.

    Frame k is due at ``t0 + k / rate_hz``; a late frame goes out at once and the schedule is kept, so
    the long-run rate is exact. Binary frames carry the scheduled time in microseconds.
    """
    clock = clock or time.perf_counter
    sleep = sleep or time.sleep
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] != 36 or len(samples) == 0:
        raise ValueError(f"IMU samples must be a non-empty [N, 36] array, got shape {samples.shape}")
    if not rate_hz > 0:
        raise ValueError(f"--rate must be > 0, got {rate_hz}")
    if fmt not in ("binary", "ascii"):
        raise ValueError(f"unknown format {fmt!r}; expected binary or ascii")
    n = len(samples)
    total = max_frames if max_frames is not None else (None if loop else n)
    period = 1.0 / rate_hz
    sent = nbytes = 0
    t0 = clock()
    while (total is None or sent < total) and not should_stop():
        i = sent % n
        if fmt == "binary":
            frame = encode_frame(sent, int(round(sent * period * 1e6)), samples[i])
        else:
            frame = encode_ascii_row(samples[i], extra[i] if extra is not None else (0, 0, 0))
        delay = t0 + sent * period - clock()
        if delay > 0:
            sleep(delay)
        write(frame)
        sent += 1
        nbytes += len(frame)
        if on_frame is not None:
            on_frame(sent)
    return StreamSummary(frames=sent, bytes=nbytes, seconds=clock() - t0, target_rate_hz=rate_hz)


class FileImuSource:
    """Replays a recorded file (``src.kind``: replay or rosbag) into ``sink.push_imu`` at ``src.rate_hz``.

    ``src`` is a ``runtime.config.SourceConfig`` (``kind``, ``path``, ``rate_hz``, ``loop``); ``sink`` is
    anything with ``push_imu(raw36, host_time_s, frame_seq)``, the runtime in practice.
    """

    def __init__(self, src, sink) -> None:
        self.src, self.runtime = src, sink
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.rows = read_rows(src.kind, src.path)
        self.stats = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"imu-{self.src.kind}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.src.rate_hz
        t0 = time.monotonic()
        k = 0
        while not self._stop.is_set():
            if k >= len(self.rows) and not self.src.loop:
                return
            delay = t0 + k * period - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            self.runtime.push_imu(self.rows[k % len(self.rows)], time.monotonic(), k)
            k += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
