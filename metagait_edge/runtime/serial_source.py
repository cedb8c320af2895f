"""Serial IMU reader thread: decodes frames from a pyserial port into a ring buffer of physical units.

The port is anything ``serial.serial_for_url`` opens: a device path (``/dev/ttyACM0``, a udev
``/dev/serial/by-id/...`` link), a pty, or a URL such as ``loop://``. When the port disappears (cable
pulled, sender restarted) the thread closes it and retries with exponential backoff until it is back,
without ever blocking the consumer of the ring buffer.

Ring rows are float32 [36] in ``imu_protocol.CHANNEL_NAMES`` order: acc in g (16384 LSB/g), gyro in
deg/s (16.4 LSB/(deg/s)); ring timestamps are host ``time.monotonic`` seconds (binary frames map the
sensor clock onto the host clock so bursts keep their spacing; ASCII rows get their arrival time).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import numpy as np

from metagait_edge.runtime.worker import ThreadOwner
from metagait_edge.imu import protocol as imu_protocol
from metagait_edge.runtime.ringbuffer import RingBuffer
from metagait_edge.sensors import ACC_LSB_PER_G, GYRO_LSB_PER_DPS

log = logging.getLogger(__name__)


@dataclass
class SerialSourceConfig:
    port: str = "/dev/ttyACM0"
    baudrate: int = 115200
    format: Literal["binary", "ascii"] = "binary"
    read_timeout_s: float = 0.05  # bounds how long stop() waits for the reader thread
    reconnect_initial_s: float = 0.05
    reconnect_max_s: float = 2.0
    ring_capacity: int = 2048  # used when no ring buffer is passed in
    acc_lsb_per_g: float = ACC_LSB_PER_G
    gyro_lsb_per_dps: float = GYRO_LSB_PER_DPS

    def __post_init__(self) -> None:
        if self.read_timeout_s <= 0 or self.reconnect_initial_s <= 0 or self.reconnect_max_s <= 0:
            raise ValueError("read_timeout_s, reconnect_initial_s and reconnect_max_s must be > 0")
        if self.acc_lsb_per_g <= 0 or self.gyro_lsb_per_dps <= 0:
            raise ValueError("acc_lsb_per_g and gyro_lsb_per_dps must be > 0")


@dataclass(frozen=True)
class SerialStats:
    frames: int
    bad_frames: int
    gaps: int
    missing: int
    reconnects: int
    bytes: int
    open_failures: int  # attempts to open the port that failed (missing device, permissions, ...)
    garbage_bytes: int
    connected: bool
    last_error: str


class _ClockMap:
    """Maps a sensor microsecond clock onto host seconds.

    The offset tracks the smallest observed (arrival - sensor time), i.e. the least-delayed frame, and
    relaxes slowly upward so a sensor clock running slow against the host does not drift away.
    """

    RELAX = 0.002

    def __init__(self) -> None:
        self.offset: Optional[float] = None
        self.last_us: Optional[int] = None

    def reset(self) -> None:
        self.offset = None
        self.last_us = None

    def host_time(self, t_us: int, arrival: float) -> float:
        if self.last_us is not None and t_us < self.last_us:
            self.offset = None  # sensor restarted: its clock starts over
        self.last_us = t_us
        cand = arrival - t_us * 1e-6
        if self.offset is None or cand < self.offset:
            self.offset = cand
        else:
            self.offset += self.RELAX * (cand - self.offset)
        return min(arrival, t_us * 1e-6 + self.offset)


class SerialSource(ThreadOwner):
    """Reader thread: ``start()``, then samples appear in ``ring``; ``stop()`` joins it."""

    @property
    def thread_label(self) -> str:  # type: ignore[override]
        return f"serial reader for {self.config.port}"

    def __init__(
        self,
        config: SerialSourceConfig,
        ring: Optional[RingBuffer] = None,
        *,
        port_factory: Optional[Callable[[], Any]] = None,
        on_frame: Optional[Callable[[imu_protocol.ImuFrame, float], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.ring = ring if ring is not None else RingBuffer(config.ring_capacity, imu_protocol.N_CHANNELS)
        if self.ring.width != imu_protocol.N_CHANNELS:
            raise ValueError(f"ring buffer width must be {imu_protocol.N_CHANNELS}, got {self.ring.width}")
        self._port_factory = port_factory or self._open_url
        self._on_frame = on_frame
        self._clock = clock
        self._decoder = imu_protocol.make_decoder(config.format)
        self._clockmap = _ClockMap()
        scale = imu_protocol.channel_scale(np.float64)
        scale[[i for i in range(36) if i % 6 < 3]] = 1.0 / config.acc_lsb_per_g
        scale[[i for i in range(36) if i % 6 >= 3]] = 1.0 / config.gyro_lsb_per_dps
        self._scale = scale.astype(self.ring.dtype)
        self._row = np.zeros(imu_protocol.N_CHANNELS, dtype=self.ring.dtype)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._bytes = 0
        self._reconnects = 0
        self._open_failures = 0
        self._warned = ""
        self._connected = False
        self._ever_connected = False
        self._last_error = ""
        self.last_frame_time: Optional[float] = None  # host time of the newest sample

    # ------------------------------------------------------------------------------------- control
    def start(self) -> "SerialSource":
        if self._thread is not None:
            raise RuntimeError("SerialSource already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"serial-source:{self.config.port}", daemon=True)
        self._thread.start()
        return self

    @property
    def stats(self) -> SerialStats:
        s = self._decoder.stats
        return SerialStats(
            frames=s.frames,
            bad_frames=s.bad_crc + s.bad_header,
            gaps=s.gaps,
            missing=s.missing,
            reconnects=self._reconnects,
            bytes=self._bytes,
            open_failures=self._open_failures,
            garbage_bytes=s.garbage_bytes,
            connected=self._connected,
            last_error=self._last_error,
        )

    # -------------------------------------------------------------------------------------- thread
    def _open_url(self):
        import serial

        return serial.serial_for_url(
            self.config.port, baudrate=self.config.baudrate, timeout=self.config.read_timeout_s
        )

    def _run(self) -> None:
        import serial

        backoff = self.config.reconnect_initial_s
        while not self._stop.is_set():
            try:
                port = self._port_factory()
            except (serial.SerialException, OSError, ValueError) as exc:
                error = f"open {self.config.port}: {exc}"
                self._open_failures += 1
                if error != self._warned:  # once per distinct error while disconnected, not once per retry
                    self._warned = error
                    log.warning("cannot open the IMU serial port %s (%s); retrying every <= %.1f s",
                                self.config.port, exc, self.config.reconnect_max_s)
                self._last_error = error
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            if self._ever_connected:
                self._reconnects += 1
                log.warning("reconnected to %s (reconnect %d)", self.config.port, self._reconnects)
            elif self._open_failures:
                log.warning("opened %s after %d failed attempt(s)", self.config.port, self._open_failures)
            self._warned = ""
            self._ever_connected = True
            self._connected = True
            backoff = self.config.reconnect_initial_s
            try:
                self._read_loop(port)
            except (serial.SerialException, OSError) as exc:
                self._last_error = f"read {self.config.port}: {exc}"
                log.warning("lost %s: %s", self.config.port, exc)
            finally:
                self._connected = False
                try:
                    port.close()
                except Exception:  # a vanished device may fail to close; it is gone either way
                    pass
                self._decoder.reset()
                self._clockmap.reset()
            if not self._stop.is_set():
                self._stop.wait(backoff)

    def _read_loop(self, port) -> None:
        while not self._stop.is_set():
            waiting = port.in_waiting
            data = port.read(min(max(1, waiting), 4096))
            if not data:
                continue
            self._bytes += len(data)
            arrival = self._clock()
            for frame in self._decoder.feed(data):
                self._push(frame, arrival)

    def _push(self, frame: imu_protocol.ImuFrame, arrival: float) -> None:
        t = arrival if frame.t_us is None else self._clockmap.host_time(frame.t_us, arrival)
        if self.last_frame_time is not None and t < self.last_frame_time:
            t = self.last_frame_time  # ring time ranges need non-decreasing timestamps
        np.multiply(frame.raw, self._scale, out=self._row)
        self.ring.push(self._row, t)
        self.last_frame_time = t
        if self._on_frame is not None:
            self._on_frame(frame, t)
