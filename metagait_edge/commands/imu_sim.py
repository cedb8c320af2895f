"""``metagait-edge imu-sim``: stream IMU frames into a serial port or a new pty, in real time.

The source is a HuGaDB recording (``--source hugadb FILE``) or a synthetic walking pattern
(``--source synthetic``); frames go out at ``--rate`` Hz on an absolute schedule (``perf_counter``),
so timing errors never accumulate into drift.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Optional

NAME = "imu-sim"
HELP = "stream a HuGaDB recording or a synthetic gait as IMU frames into a serial port or pty"

DEFAULT_RATE_HZ = 58.8  # HuGaDB's sample rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--port", metavar="PATH", help="serial port path or pyserial URL to write to")
    out.add_argument("--pty", action="store_true", help="create a pty pair and print the slave path to read from")
    parser.add_argument(
        "--source", nargs="+", default=["synthetic"], metavar="KIND",
        help="'hugadb FILE' (a HuGaDB v1 .txt recording) or 'synthetic' (default)",
    )
    parser.add_argument("--rate", type=float, default=None, help="frames per second (default: the recording's, 58.8)")
    parser.add_argument("--format", choices=("binary", "ascii"), default="binary", help="wire format (docs/imu_protocol.md)")
    parser.add_argument("--loop", action="store_true", help="start over at the end of the recording")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--synthetic-seconds", type=float, default=30.0, help="length of the synthetic recording")
    parser.add_argument("--baudrate", type=int, default=115200, help="baud rate when --port is a real device")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass(frozen=True)
class StreamSummary:
    frames: int
    bytes: int
    seconds: float
    target_rate_hz: float

    @property
    def rate_hz(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def synthetic_imu(n: int, rate_hz: float = DEFAULT_RATE_HZ, seed: int = 0, cadence_hz: float = 0.9):
    """int16 [n, 36] counts of a plausible walking pattern: gravity on acc, a gait-periodic swing on all.

    Legs are half a cycle apart; foot, shin and thigh have growing phase lags and shrinking amplitudes.
    """
    import numpy as np

    from metagait_edge.runtime.imu_protocol import ACC_LSB_PER_G, GYRO_LSB_PER_DPS

    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate_hz
    out = np.empty((n, 36), dtype=np.float64)
    for k in range(6):
        leg_phase = 0.0 if k < 3 else np.pi
        seg = k % 3  # foot, shin, thigh
        ph = 2 * np.pi * cadence_hz * t + leg_phase - 0.6 * seg
        amp_acc = (0.6, 0.4, 0.25)[seg]
        amp_gyro = (250.0, 180.0, 120.0)[seg]
        out[:, 6 * k + 0] = amp_acc * np.sin(ph)
        out[:, 6 * k + 1] = 0.1 * amp_acc * np.sin(2 * ph)
        out[:, 6 * k + 2] = 1.0 + amp_acc * 0.5 * np.cos(ph)
        out[:, 6 * k + 3] = 0.1 * amp_gyro * np.sin(ph + 0.3)
        out[:, 6 * k + 4] = 0.05 * amp_gyro * np.cos(2 * ph)
        out[:, 6 * k + 5] = amp_gyro * np.cos(ph)
    out[:, [i for i in range(36) if i % 6 < 3]] *= ACC_LSB_PER_G
    out[:, [i for i in range(36) if i % 6 >= 3]] *= GYRO_LSB_PER_DPS
    out += rng.normal(0.0, 30.0, size=out.shape)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def load_hugadb_samples(path: str):
    """(int16 [N, 36] IMU counts, int [N, 3] EMG_r/EMG_l/act, sample rate) of a HuGaDB v1 file."""
    import numpy as np

    try:
        from metagait_edge.data import hugadb
    except ImportError:  # the dataset module is optional for the runtime; read the rows directly
        hugadb = None
    if hugadb is not None:
        rec = hugadb.parse_file(path)
        extra = np.concatenate([rec.emg.astype(np.int64), rec.act.astype(np.int64)[:, None]], axis=1)
        return rec.raw, extra, rec.sample_rate_hz
    from metagait_edge.runtime.imu_protocol import parse_hugadb_line

    rows = []
    with open(path, "rb") as fh:
        for line in fh:
            v = parse_hugadb_line(line)
            if v is not None:
                rows.append(v)
    if not rows:
        raise ValueError(f"{path}: no HuGaDB data rows (39 tab-separated integers) found")
    table = np.stack(rows)
    return table[:, :36].astype(np.int16), table[:, 36:].astype(np.int64), DEFAULT_RATE_HZ


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
    import time

    import numpy as np

    from metagait_edge.runtime.imu_protocol import encode_ascii_row, encode_frame

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


def run(args: argparse.Namespace) -> int:
    import os

    kind, *rest = args.source
    if kind == "hugadb":
        if len(rest) != 1:
            raise ValueError("--source hugadb needs exactly one FILE (a HuGaDB v1 .txt recording)")
        samples, extra, file_rate = load_hugadb_samples(rest[0])
    elif kind == "synthetic":
        if rest:
            raise ValueError(f"--source synthetic takes no file, got {' '.join(rest)}")
        file_rate = DEFAULT_RATE_HZ
        samples = synthetic_imu(max(1, int(args.synthetic_seconds * (args.rate or file_rate))), args.rate or file_rate)
        extra = None
    else:
        raise ValueError(f"--source must be 'hugadb FILE' or 'synthetic', got {kind!r}")
    rate = args.rate or file_rate

    master_fd = None
    port = None
    dropped = [0]
    if args.pty:
        import tty

        master_fd, slave_fd = os.openpty()
        tty.setraw(slave_fd)  # no echo or newline translation: bytes pass unchanged
        os.set_blocking(master_fd, False)
        print(f"pty: {os.ttyname(slave_fd)}", flush=True)

        def write(b: bytes) -> None:
            # Like a UART with nobody listening, the simulator never waits: what does not fit is lost.
            try:
                if os.write(master_fd, b) < len(b):
                    dropped[0] += 1
            except BlockingIOError:
                dropped[0] += 1
    else:
        import serial

        port = serial.serial_for_url(args.port, baudrate=args.baudrate, write_timeout=1.0)
        write = port.write

    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        total = args.max_frames if args.max_frames is not None else (None if args.loop else len(samples))
        progress = tqdm(total=total, unit="frame", desc="imu-sim", file=sys.stderr, mininterval=0.5)
    try:
        summary = stream_frames(
            write, samples, rate, args.format, extra=extra, loop=args.loop, max_frames=args.max_frames,
            on_frame=(lambda _n: progress.update(1)) if progress is not None else None,
        )
    except KeyboardInterrupt:
        summary = None
    finally:
        if progress is not None:
            progress.close()
        if port is not None:
            port.close()
        if master_fd is not None:
            os.close(master_fd)
            os.close(slave_fd)
    if summary is None:
        print("imu-sim: interrupted", file=sys.stderr)
        return 130
    print(
        f"imu-sim: sent {summary.frames} {args.format} frames ({summary.bytes} bytes) in {summary.seconds:.2f} s: "
        f"{summary.rate_hz:.2f} Hz achieved, {summary.target_rate_hz:.2f} Hz target"
        + (f", {dropped[0]} frames lost (pty buffer full: nobody reading)" if dropped[0] else "")
    )
    return 0
