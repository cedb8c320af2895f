"""Wire formats of the IMU stream: a binary frame (see docs/imu_protocol.md) and HuGaDB ASCII rows.

Binary frame, version 1, 90 bytes, all multi-byte fields little-endian::

    0  2  sync        0xA5 0x5A
    2  1  version     1
    3  1  length      84 = bytes from ``seq`` to the end of the samples
    4  4  seq         uint32, +1 per frame, wraps
    8  8  t_us        uint64, sensor clock in microseconds
    16 72 samples     36 x int16: for rf, rs, rt, lf, ls, lt: acc x y z, gyro x y z (raw counts)
    88 2  crc         CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of bytes 2..87

ASCII mode carries the rows the HuGaDB recorder writes: 39 tab-separated integers (the 36 IMU values in
the same order, then EMG right, EMG left, activity id), one row per line.

The decoders are incremental (``feed(bytes) -> frames``), resynchronize after garbage, count what they
drop, and never raise on any input bytes.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from metagait_edge.sensors import ACC_LSB_PER_G, GYRO_LSB_PER_DPS, IMU_CHANNELS

SYNC = b"\xA5\x5A"
VERSION = 1
N_IMUS = 6
N_CHANNELS = 36
CHANNEL_NAMES = IMU_CHANNELS  # samples: for rf, rs, rt, lf, ls, lt (metagait_edge.sensors): acc x y z, gyro x y z
HUGADB_COLUMNS = CHANNEL_NAMES + ("EMG_r", "EMG_l", "act")

_HEADER = struct.Struct("<2sBBIQ")  # sync, version, length, seq, t_us
HEADER_SIZE = _HEADER.size  # 16
PAYLOAD_SIZE = N_CHANNELS * 2  # 72
LENGTH_FIELD = HEADER_SIZE - 4 + PAYLOAD_SIZE  # 84
FRAME_SIZE = HEADER_SIZE + PAYLOAD_SIZE + 2  # 90
_SAMPLES_DTYPE = np.dtype("<i2")
_SEQ_MOD = 1 << 32
MAX_ASCII_LINE = 1024  # longer "lines" are garbage, not rows


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (binascii.crc_hqx with init 0xFFFF); check value of b"123456789" is 0x29B1."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True)
class ImuFrame:
    """One sample of all six IMUs as raw int16 counts."""

    seq: int
    t_us: Optional[int]  # sensor timestamp; None in ASCII mode (HuGaDB rows carry none)
    raw: np.ndarray  # int16 [36] in CHANNEL_NAMES order
    extra: Optional[tuple] = None  # ASCII mode: (EMG_r, EMG_l, act)


def channel_scale(dtype=np.float32) -> np.ndarray:
    """Per-channel factor from raw counts to physical units: g for acc, deg/s for gyro."""
    per_imu = [1.0 / ACC_LSB_PER_G] * 3 + [1.0 / GYRO_LSB_PER_DPS] * 3
    return np.asarray(per_imu * N_IMUS, dtype=dtype)


def _as_raw(raw) -> np.ndarray:
    arr = np.asarray(raw)
    if arr.shape != (N_CHANNELS,):
        raise ValueError(f"IMU sample must have {N_CHANNELS} values, got shape {arr.shape}")
    if arr.dtype != np.int16:
        if not np.issubdtype(arr.dtype, np.integer) or arr.min() < -32768 or arr.max() > 32767:
            raise ValueError("IMU sample values must be integers within int16 range")
    return arr.astype(_SAMPLES_DTYPE, copy=False)


def encode_frame(seq: int, t_us: int, raw) -> bytes:
    """One binary frame; ``seq`` is taken modulo 2**32."""
    if t_us < 0 or t_us >= 1 << 64:
        raise ValueError(f"t_us out of uint64 range: {t_us}")
    body = _HEADER.pack(SYNC, VERSION, LENGTH_FIELD, seq % _SEQ_MOD, t_us) + _as_raw(raw).tobytes()
    return body + struct.pack("<H", crc16(body[2:]))


def encode_ascii_row(raw, extra: Sequence[int] = (0, 0, 0)) -> bytes:
    """A HuGaDB-style row: 36 IMU counts then EMG_r, EMG_l, act, tab-separated, newline-terminated."""
    values = [int(v) for v in _as_raw(raw)] + [int(v) for v in extra]
    if len(values) != len(HUGADB_COLUMNS):
        raise ValueError(f"extra must hold 3 values (EMG_r, EMG_l, act), got {len(extra)}")
    return ("\t".join(str(v) for v in values) + "\n").encode("ascii")


def parse_hugadb_line(line: str | bytes) -> Optional[np.ndarray]:
    """The 39 integers of one HuGaDB data row as int32, or None for header/blank/malformed lines."""
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError:
            return None
    parts = line.split()
    if len(parts) != len(HUGADB_COLUMNS):
        return None
    try:
        values = np.array([int(p) for p in parts], dtype=np.int64)
    except ValueError:
        return None
    if values[:N_CHANNELS].min() < -32768 or values[:N_CHANNELS].max() > 32767:
        return None
    return values.astype(np.int32)


@dataclass
class DecoderStats:
    frames: int = 0  # frames accepted
    bad_crc: int = 0  # well-formed header, checksum mismatch
    bad_header: int = 0  # sync found but unknown version or wrong length (ASCII: malformed row)
    garbage_bytes: int = 0  # bytes skipped while looking for a frame
    gaps: int = 0  # times the sequence number jumped forward
    missing: int = 0  # frames missing in those jumps
    seq_resets: int = 0  # sequence went backwards (sender restarted)
    header_lines: int = 0  # ASCII: non-data lines skipped

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _SeqTracker:
    def __init__(self, stats: DecoderStats) -> None:
        self.stats = stats
        self.last: Optional[int] = None

    def see(self, seq: int) -> None:
        if self.last is not None:
            delta = (seq - self.last) % _SEQ_MOD
            if delta == 0 or delta >= _SEQ_MOD // 2:
                self.stats.seq_resets += 1  # duplicate or backwards: a restarted sender, not a gap
            elif delta > 1:
                self.stats.gaps += 1
                self.stats.missing += delta - 1
        self.last = seq

    def reset(self) -> None:
        self.last = None


class FrameDecoder:
    """Incremental decoder of binary frames: ``feed(bytes) -> [ImuFrame]``; never raises on data."""

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._seq = _SeqTracker(self.stats)

    def reset(self) -> None:
        """Forget buffered bytes and the last sequence number (e.g. after a reconnect)."""
        self._buf.clear()
        self._seq.reset()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[ImuFrame]:
        buf = self._buf
        buf += data
        out: list[ImuFrame] = []
        pos = 0
        n = len(buf)
        while True:
            i = buf.find(SYNC, pos)
            if i < 0:
                # Keep a trailing first sync byte: its partner may arrive in the next chunk.
                keep = 1 if n > pos and buf[n - 1] == SYNC[0] else 0
                self.stats.garbage_bytes += n - pos - keep
                pos = n - keep
                break
            self.stats.garbage_bytes += i - pos
            pos = i
            if n - i < 4:
                break
            if buf[i + 2] != VERSION or buf[i + 3] != LENGTH_FIELD:
                self.stats.bad_header += 1
                pos = i + 1
                continue
            if n - i < FRAME_SIZE:
                break
            end = i + FRAME_SIZE
            crc = buf[end - 2] | (buf[end - 1] << 8)
            if crc16(bytes(buf[i + 2:end - 2])) != crc:
                self.stats.bad_crc += 1
                pos = i + 1  # the real frame may start inside this false or truncated one
                continue
            _, _, _, seq, t_us = _HEADER.unpack_from(buf, i)
            raw = np.frombuffer(bytes(buf[i + HEADER_SIZE:end - 2]), dtype=_SAMPLES_DTYPE).astype(np.int16)
            self._seq.see(seq)
            self.stats.frames += 1
            out.append(ImuFrame(seq, t_us, raw))
            pos = end
        del buf[:pos]
        return out


class AsciiDecoder:
    """Incremental decoder of HuGaDB rows; assigns its own sequence numbers (rows carry none)."""

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._next_seq = 0
        self._seen_data = False

    def reset(self) -> None:
        self._buf.clear()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[ImuFrame]:
        self._buf += data
        out: list[ImuFrame] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(self._buf[start:nl]).rstrip(b"\r")
            start = nl + 1
            frame = self._line(line)
            if frame is not None:
                out.append(frame)
        del self._buf[:start]
        if len(self._buf) > MAX_ASCII_LINE:
            self.stats.garbage_bytes += len(self._buf)
            self._buf.clear()
        return out

    def _line(self, line: bytes) -> Optional[ImuFrame]:
        values = parse_hugadb_line(line)
        if values is None:
            stripped = line.strip()
            if not stripped:
                return None
            # Before the first data row anything is a header (the recorder writes '#...' lines and a
            # column-name line); after it, a line that does not parse is a corrupted row.
            if stripped.startswith(b"#") or not self._seen_data and not _looks_numeric(stripped):
                self.stats.header_lines += 1
            else:
                self.stats.bad_header += 1
            return None
        self._seen_data = True
        seq = self._next_seq
        self._next_seq = (seq + 1) % _SEQ_MOD
        self.stats.frames += 1
        extra = tuple(int(v) for v in values[N_CHANNELS:])
        return ImuFrame(seq, None, values[:N_CHANNELS].astype(np.int16), extra)


def _looks_numeric(line: bytes) -> bool:
    head = line.split(None, 1)[0] if line.split() else b""
    return head.lstrip(b"+-").isdigit()


def make_decoder(fmt: str) -> FrameDecoder | AsciiDecoder:
    if fmt == "binary":
        return FrameDecoder()
    if fmt == "ascii":
        return AsciiDecoder()
    raise ValueError(f"unknown IMU stream format {fmt!r}; expected 'binary' or 'ascii'")
