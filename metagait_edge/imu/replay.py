"""Recorded IMU samples back into a stream, in real time, on an absolute schedule.

- :func:`load_hugadb_samples`: a HuGaDB v1 text recording as raw counts (through ``data.hugadb``);
- :func:`pace` and :class:`PacedThread`: the one real-time replay loop (item k at ``t0 + k / rate``, on an
  absolute schedule), synchronous or on a stoppable thread;
- :func:`stream_frames`: samples as wire frames into any byte sink (``metagait-edge imu-sim``; the virtual
  walker's pty link, ``runtime.virtual_walker.PtySerialLink``, runs the same loop on a thread);
- :class:`FileImuSource`: a recorded file pushed into a consumer's ``push_imu`` (the runtime's ``replay``
  and ``rosbag`` sources), a real-time stand-in for a serial port; the ROS 2 nodes' replay source is a
  :class:`PacedThread` too.

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


def pace(
    emit: Callable[[int], object],
    n: int,
    rate_hz: float,
    *,
    loop: bool = False,
    max_frames: Optional[int] = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], object] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[int, float]:
    """Call ``emit(k)`` for k = 0, 1, ... at ``t0 + k / rate_hz``; (calls made, seconds taken).

    ``n`` items, once (or ``max_frames`` calls), or for ever with ``loop``; ``emit`` maps ``k`` to its item
    (``k % n``). A late call goes out at once and the schedule is kept, so the long-run rate is exact.
    ``should_stop`` is checked before each call and after each wait (pass ``event.wait`` as ``sleep`` and
    ``event.is_set`` as ``should_stop`` to stop a thread at once).
    """
    if not rate_hz > 0:
        raise ValueError(f"--rate must be > 0, got {rate_hz}")
    total = max_frames if max_frames is not None else (None if loop else n)
    period = 1.0 / rate_hz
    k = 0
    t0 = clock()
    while (total is None or k < total) and not should_stop():
        delay = t0 + k * period - clock()
        if delay > 0:
            sleep(delay)
            if should_stop():
                break
        emit(k)
        k += 1
    return k, clock() - t0


class PacedThread:
    """:func:`pace` on a daemon thread: ``start()``, ``stop(timeout)``, ``wait(timeout)``.

    The one replay thread of the recorded and synthetic IMU sources (:class:`FileImuSource`, the ROS 2
    nodes' replay source, the virtual walker's pty link); ``emit(k)`` is called with ``k`` counting up.
    """

    def __init__(self, emit: Callable[[int], object], n: int, rate_hz: float, *, thread_name: str,
                 loop: bool = False, max_frames: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if n < 1:
            raise ValueError(f"{thread_name}: nothing to replay")
        if not rate_hz > 0:
            raise ValueError(f"{thread_name}: rate must be > 0, got {rate_hz}")
        self.emit, self.n, self.rate_hz = emit, n, float(rate_hz)
        self.thread_name, self.loop, self.max_frames, self.clock = thread_name, loop, max_frames, clock
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        pace(self.emit, self.n, self.rate_hz, loop=self.loop, max_frames=self.max_frames, clock=self.clock,
             sleep=self._stop.wait, should_stop=self._stop.is_set)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Until the replay ends (not looping) or ``timeout`` seconds."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


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
    """Write ``samples`` (int16 [N, 36]) as frames at ``rate_hz`` on an absolute schedule (:func:`pace`).

    Binary frames carry the scheduled time in microseconds; ``on_frame(frames sent)`` after each write.
    """
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] != 36 or len(samples) == 0:
        raise ValueError(f"IMU samples must be a non-empty [N, 36] array, got shape {samples.shape}")
    if not rate_hz > 0:
        raise ValueError(f"--rate must be > 0, got {rate_hz}")
    if fmt not in ("binary", "ascii"):
        raise ValueError(f"unknown format {fmt!r}; expected binary or ascii")
    n = len(samples)
    period = 1.0 / rate_hz
    nbytes = 0

    def emit(k: int) -> None:
        nonlocal nbytes
        i = k % n
        if fmt == "binary":
            frame = encode_frame(k, int(round(k * period * 1e6)), samples[i])
        else:
            frame = encode_ascii_row(samples[i], extra[i] if extra is not None else (0, 0, 0))
        write(frame)
        nbytes += len(frame)
        if on_frame is not None:
            on_frame(k + 1)

    sent, seconds = pace(emit, n, rate_hz, loop=loop, max_frames=max_frames, clock=clock or time.perf_counter,
                         sleep=sleep or time.sleep, should_stop=should_stop)
    return StreamSummary(frames=sent, bytes=nbytes, seconds=seconds, target_rate_hz=rate_hz)


class FileImuSource(PacedThread):
    """Replays a recorded file (``src.kind``: replay or rosbag) into ``sink.push_imu`` at ``src.rate_hz``.

    ``src`` is a ``runtime.config.SourceConfig`` (``kind``, ``path``, ``rate_hz``, ``loop``); ``sink`` is
    anything with ``push_imu(raw36, host_time_s, frame_seq)``, the runtime in practice.
    """

    def __init__(self, src, sink) -> None:
        self.src, self.runtime = src, sink
        self.rows = read_rows(src.kind, src.path)
        self.stats = None
        super().__init__(self._push, len(self.rows), src.rate_hz, thread_name=f"imu-{src.kind}", loop=src.loop)

    def _push(self, k: int) -> None:
        self.runtime.push_imu(self.rows[k % len(self.rows)], time.monotonic(), k)
