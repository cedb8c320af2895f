"""``metagait-edge imu-sim``: stream IMU frames into a serial port or a new pty, in real time.

The source is a HuGaDB recording (``--source hugadb FILE``) or a synthetic walking pattern
(``--source synthetic``); frames go out at ``--rate`` Hz on an absolute schedule (``perf_counter``),
so timing errors never accumulate into drift.
"""

from __future__ import annotations

import argparse
import sys

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


def run(args: argparse.Namespace) -> int:
    import os

    from metagait_edge.imu.replay import load_hugadb_samples, stream_frames
    from metagait_edge.imu.synthetic import synthetic_imu

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
