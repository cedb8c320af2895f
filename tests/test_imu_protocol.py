from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metagait_edge.imu import protocol as P

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _raw(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32768, size=36).astype(np.int16)


def test_crc_is_ccitt_false():
    assert P.crc16(b"123456789") == 0x29B1


def test_frame_layout_is_as_documented():
    raw = np.arange(36, dtype=np.int16) - 18
    f = P.encode_frame(0x01020304, 0x1122334455667788, raw)
    assert len(f) == P.FRAME_SIZE == 90
    assert f[:2] == b"\xA5\x5A" and f[2] == 1 and f[3] == 84
    assert f[4:8] == bytes([4, 3, 2, 1])
    assert f[8:16] == bytes.fromhex("8877665544332211")
    assert np.array_equal(np.frombuffer(f[16:88], "<i2"), raw)
    assert int.from_bytes(f[88:90], "little") == P.crc16(f[2:88])


def test_roundtrip_in_one_byte_chunks():
    frames = [P.encode_frame(s, 1000 * s, _raw(s)) for s in range(5)]
    dec = P.FrameDecoder()
    got = []
    for b in b"".join(frames):
        got += dec.feed(bytes([b]))
    assert [g.seq for g in got] == list(range(5))
    assert all(np.array_equal(g.raw, _raw(g.seq)) and g.t_us == 1000 * g.seq for g in got)
    assert dec.stats.frames == 5 and dec.stats.garbage_bytes == 0 and dec.pending == 0


def test_sequence_gaps_wraparound_and_resets_are_counted():
    dec = P.FrameDecoder()
    seqs = [2**32 - 2, 2**32 - 1, 0, 3, 4, 9, 1]
    dec.feed(b"".join(P.encode_frame(s, 0, _raw(0)) for s in seqs))
    assert dec.stats.frames == 7
    assert dec.stats.gaps == 2 and dec.stats.missing == 2 + 4
    assert dec.stats.seq_resets == 1


def test_encode_rejects_bad_samples():
    with pytest.raises(ValueError, match="36"):
        P.encode_frame(0, 0, np.zeros(35, np.int16))
    with pytest.raises(ValueError, match="int16"):
        P.encode_frame(0, 0, np.full(36, 40000))


@SETTINGS
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_never_crash(chunks):
    for dec in (P.FrameDecoder(), P.AsciiDecoder()):
        frames = []
        for c in chunks:
            frames += dec.feed(c)
        for f in frames:
            assert f.raw.shape == (36,) and f.raw.dtype == np.int16
        assert dec.pending <= max(P.FRAME_SIZE, P.MAX_ASCII_LINE) + 300


_KINDS = st.sampled_from(["ok", "ok", "ok", "flip_body", "bad_length", "truncate", "flip_sync"])


@SETTINGS
@given(
    st.lists(st.tuples(_KINDS, st.binary(max_size=40), st.integers(0, 10**6)), min_size=1, max_size=25),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(1, 200), min_size=1, max_size=20),
)
def test_valid_frames_survive_garbage_and_corruption_with_exact_counts(spec, seq0, chunk_sizes):
    # The stream: an intact first frame, then per spec item some garbage and a possibly corrupted frame,
    # then an intact last frame (so a truncated frame is never left waiting at the end).
    items = [("ok", b"", 0)] + list(spec) + [("ok", b"", 0)]
    stream = bytearray()
    expected_ok, sync_starts = [], []
    bad_crc = bad_header = lost = gaps = 0
    prev_lost = False
    for k, (kind, garbage, r) in enumerate(items):
        seq = (seq0 + k) % 2**32
        frame = bytearray(P.encode_frame(seq, 10 * k, _raw(k)))
        stream += garbage.replace(b"\xA5", b"\x00")  # garbage never starts a false sync
        if kind == "flip_body":
            pos = 4 + r % (P.FRAME_SIZE - 4)
            frame[pos] ^= 1 << (r % 8)
            bad_crc += 1
        elif kind == "bad_length":
            frame[3] = (frame[3] + 1 + r % 200) % 256
            bad_header += 1
        elif kind == "truncate":
            frame = frame[: 4 + r % (P.FRAME_SIZE - 5)]
            bad_crc += 1  # it swallows the next bytes as its tail and fails the CRC
        elif kind == "flip_sync":
            frame[r % 2] ^= 1 << (r % 8)  # no longer a frame start: just garbage
        if kind in ("ok", "flip_body", "bad_length", "truncate"):
            sync_starts.append(len(stream))
        if kind == "ok":
            expected_ok.append(seq)
            gaps += prev_lost
            prev_lost = False
        else:
            lost += 1
            prev_lost = True
        stream += frame
    stream = bytes(stream)
    # Reject the rare streams where CRC/sequence bytes happen to form a sync pattern elsewhere.
    found = [i for i in range(len(stream) - 1) if stream[i:i + 2] == P.SYNC]
    assume(found == sync_starts)

    dec = P.FrameDecoder()
    got, pos, i = [], 0, 0
    while pos < len(stream):
        n = chunk_sizes[i % len(chunk_sizes)]
        got += dec.feed(stream[pos:pos + n])
        pos += n
        i += 1
    assert [f.seq for f in got] == expected_ok
    assert dec.stats.frames == len(expected_ok)
    assert dec.stats.bad_crc == bad_crc
    assert dec.stats.bad_header == bad_header
    assert dec.stats.missing == lost and dec.stats.gaps == gaps
    assert dec.pending == 0
    for f in got:
        k = (f.seq - seq0) % 2**32
        assert np.array_equal(f.raw, _raw(k)) and f.t_us == 10 * k


@SETTINGS
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=60)), min_size=1, max_size=15))
def test_frames_survive_arbitrary_garbage(spec):
    # Garbage may contain anything, including false syncs: every intact frame is still recovered.
    stream = b""
    for k, (_, garbage) in enumerate(spec):
        stream += garbage + P.encode_frame(k, k, _raw(k))
    dec = P.FrameDecoder()
    got = dec.feed(stream)
    assert [f.seq for f in got][-len(spec):] == list(range(len(spec)))


def test_ascii_rows_headers_and_bad_rows():
    rows = [P.encode_ascii_row(_raw(k), (k, 2 * k, 1)) for k in range(3)]
    text = (
        b"#Activity\twalking\n#ActivityID\t1\n"
        + b"\t".join(c.encode() for c in P.HUGADB_COLUMNS) + b"\n"
        + rows[0] + b"1\t2\t3\n" + rows[1] + b"\r\n"[:0] + rows[2].replace(b"\n", b"\r\n")
    )
    dec = P.AsciiDecoder()
    got = []
    for k in range(0, len(text), 7):
        got += dec.feed(text[k:k + 7])
    assert [f.seq for f in got] == [0, 1, 2]
    assert all(np.array_equal(f.raw, _raw(k)) and f.extra == (k, 2 * k, 1) for k, f in enumerate(got))
    assert dec.stats.header_lines == 3 and dec.stats.bad_header == 1 and dec.stats.frames == 3


def test_parse_hugadb_line():
    assert P.parse_hugadb_line("acc_rf_x\tacc_rf_y") is None
    row = "\t".join(["100"] * 36 + ["5", "6", "1"])
    v = P.parse_hugadb_line(row)
    assert v.shape == (39,) and v[0] == 100 and v[-1] == 1
    assert P.parse_hugadb_line("\t".join(["40000"] * 39)) is None


def test_channel_names_and_scale():
    assert P.CHANNEL_NAMES[:6] == ("acc_rf_x", "acc_rf_y", "acc_rf_z", "gyro_rf_x", "gyro_rf_y", "gyro_rf_z")
    assert P.CHANNEL_NAMES[-1] == "gyro_lt_z" and len(P.HUGADB_COLUMNS) == 39
    s = P.channel_scale()
    assert s[0] * 16384 == pytest.approx(1.0) and s[3] * 16.4 == pytest.approx(1.0)
