"""gait.phase in the runtime (issue 17, item 4): the streaming estimator, the wire, HOLD, the per-mode reference."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metagait_edge.runtime import zmq_schema as M  # noqa: E402
from metagait_edge.runtime.calibration import CycleRecord, calibration_mode  # noqa: E402
from metagait_edge.runtime.config import CalibrationConfig, EdgeConfig  # noqa: E402
from metagait_edge.runtime.orchestrator import Runtime  # noqa: E402
from metagait_edge.runtime.phase_stream import (  # noqa: E402
    PhaseEstimate, PhaseStream, PhaseStreamConfig, gyro_valid_for, mode_reference,
)
from metagait_edge.runtime.profiles import ProfileStore  # noqa: E402
from tests.conftest import shared_hugadb_archive  # noqa: E402
from tests.test_orchestrator import Collect, _feed  # noqa: E402

needs_hugadb = pytest.mark.skipif(shared_hugadb_archive() is None, reason="needs the HuGaDB archive under $METAGAIT_DATA")
RATE = 58.8


@pytest.fixture(scope="module")
def db():
    from metagait_edge.data.hugadb import HuGaDB

    return HuGaDB.open()


def _estimate(**kw) -> PhaseEstimate:
    base = dict(t_s=0.0, phase=(0.25, 0.75), rate_hz=1.1, mode="walking", mode_index=0, confidence=0.9,
                status="OK", reason="", source="phasenet")
    return PhaseEstimate(**{**base, **kw})


# ------------------------------------------------------------------------------------ the estimator
@needs_hugadb
@pytest.mark.slow
def test_stream_matches_the_offline_estimator_with_the_tables_gyro_masks(db):
    from metagait_edge.phase.dataset import features
    from metagait_edge.phase.model import RESOURCE_DIR, decode, load_phase_ensemble, predict_recording

    fid = "HuGaDB_v1_walking_03_00"  # right foot, shank and thigh gyroscopes corrupted in the authors' table
    rec = db.load(fid)
    cfg = PhaseStreamConfig(mode_alpha=1.0)
    valid = gyro_valid_for(cfg, Path(f"/data/{fid}.txt"))
    assert [s for s, ok in valid.items() if not ok] == ["rf", "rs", "rt"]
    x = features(rec.physical()[:600], valid)
    nets = load_phase_ensemble(RESOURCE_DIR / "all")
    assert len(nets) == 2
    # the seed-0 network alone, one pass: what phase.members: 1 and phase.mirror_average: false run
    lean = PhaseStream(PhaseStreamConfig(mode_alpha=1.0, members=1, mirror_average=False), RATE, valid)
    lean_phase = np.array([lean.push(r, k / RATE).phase for k, r in enumerate(rec.physical()[:600])]) * 100
    lean_offline = decode(predict_recording(nets[0], x, mirror=False))["phase"]
    ok = lean_phase.any(1)
    assert np.abs(np.mod(lean_phase[ok] - lean_offline[ok] + 50, 100) - 50).max() < 1e-3
    offline = decode(predict_recording(nets, x))
    assert np.abs(np.mod(offline["phase"][ok] - lean_offline[ok] + 50, 100) - 50).max() > 0.5  # they do differ
    stream = PhaseStream(cfg, RATE, valid)
    assert stream.source == "phasenet" and len(stream.net.models) == 2 and stream.net.mirror
    out = [stream.push(x, k / RATE) for k, x in enumerate(rec.physical()[:600])]
    ok = np.array([e.status == "OK" for e in out])
    assert ok[40:].mean() > 0.9 and not ok[:cfg.warmup_samples].any()
    est = np.array([e.phase for e in out])[ok] * 100
    err = np.mod(est - offline["phase"][ok] + 50, 100) - 50
    assert np.abs(err).max() < 1e-3
    assert [e.mode_index for e in out] == offline["mode_prob"].argmax(1).tolist()
    rates = np.array([e.rate_hz for e in out])[ok]
    assert 0.7 < np.median(rates) < 1.4  # about one stride per second in walking


def test_configured_masks_and_missing_weights_fall_back_to_the_baseline(tmp_path):
    from metagait_edge.runtime.virtual_walker import synthetic_walker

    cfg = PhaseStreamConfig(weights=tmp_path / "nothing", masked_gyros=["ls"])
    assert gyro_valid_for(cfg, Path("/x/HuGaDB_v1_walking_03_00.txt"))["ls"] is False  # configured masks win
    stream = PhaseStream(cfg, RATE)
    assert stream.source == "baseline" and "no PhaseNet checkpoint" in stream.note
    w = synthetic_walker(seconds=10)
    from metagait_edge.imu.protocol import channel_scale

    scale = channel_scale(np.float32)
    out = [stream.push(np.asarray(r, np.float32) * scale, k / RATE) for k, r in enumerate(w.samples[:500])]
    assert out[0].status == "HOLD" and "no stride detected yet" in out[0].reason
    late = [e for e in out[200:] if e.status != "HOLD"]
    assert late and all(e.status == "DEGRADED" and e.source == "baseline" and e.mode == "unknown" for e in late)
    steps = np.diff([e.phase[0] for e in late])
    assert np.mean((steps > 0) | (steps < -0.5)) > 0.95  # advances, wrapping once a stride


def test_config_rejects_unknown_policy_and_sensor():
    with pytest.raises(ValueError, match="other_mode_policy"):
        PhaseStreamConfig(other_mode_policy="personalized")
    with pytest.raises(ValueError, match="masked_gyros.*'xx'"):
        PhaseStreamConfig(masked_gyros=["xx"])
    with pytest.raises(ValueError, match="phase.members"):
        PhaseStreamConfig(members=-1)
    from metagait_edge.config import from_dict

    cfg = from_dict(EdgeConfig, {"sources": [], "phase": {"other_mode_policy": "hold"}})
    assert cfg.phase.other_mode_policy == "hold"
    with pytest.raises(Exception, match="phase.polcy"):
        from_dict(EdgeConfig, {"sources": [], "phase": {"polcy": "hold"}})


# ------------------------------------------------------------------------------------ mode policy
def test_mode_reference_policy():
    assert mode_reference("walking", "walking", "generic") == (True, None, "")
    assert mode_reference("stairs_up", None, "hold") == (True, None, "")  # no profile: the generic model anyway
    allowed, hold, note = mode_reference("stairs_up", "walking", "generic")
    assert (allowed, hold) == (False, None) and note.startswith("mode stairs_up: personalized for walking")
    allowed, hold, _ = mode_reference("stairs_up", "walking", "hold")
    assert not allowed and hold.startswith("mode stairs_up")
    for mode in ("standing", "sitting", "transition"):
        assert mode_reference(mode, None, "generic")[1] == f"mode {mode}: no periodic reference"
    assert mode_reference("unknown", "walking", "hold") == (True, None, "")  # baseline: no modes known


def test_calibration_mode_is_the_most_common_gait_mode():
    def rec(mode):
        return CycleRecord(np.zeros((42, 101)), np.ones(42, bool), 1.0, 0.02, 0.0, 0, mode)

    assert calibration_mode([rec("stairs_up"), rec("walking"), rec("stairs_up")]) == "stairs_up"
    assert calibration_mode([rec("unknown"), rec("standing")]) == "walking"  # no gait mode estimated: walking


# ------------------------------------------------------------------------------------ schema
def _phase_frames(**header_changes):
    h = M.make_header(3, t_input_ns=M.now_ns() - 1000, phase=0.25, cycle_s=0.9, shape=(5,),
                      channels=M.PHASE_CHANNELS, confidence=0.9, mode="walking", source="phasenet")
    h.update(header_changes)
    return [M.TOPIC_PHASE, msgpack.packb(h), np.array([0.25, 0.75, 1.1, 0, 0.9], "<f4").tobytes()]


@pytest.mark.parametrize("frames, match", [
    (_phase_frames(mode="flying"), "mode 'flying'"),
    (_phase_frames(mode="running"), "mode_index 0 does not name mode 'running'"),
    (_phase_frames(source="oracle"), "source 'oracle'"),
    (_phase_frames(phase=0.5), "header phase 0.5"),
    (_phase_frames(t_input_ns=0), "time of its IMU sample"),
    (_phase_frames(status="HOLD"), "HOLD phase must carry phase 0"),
    (_phase_frames(shape=[4]), "payload has 20 bytes|shape"),
    ([M.TOPIC_PHASE, msgpack.packb({k: v for k, v in msgpack.unpackb(_phase_frames()[1]).items() if k != "mode"}),
      _phase_frames()[2]], "field 'mode' missing"),
    ([M.TOPIC_PHASE, _phase_frames()[1], np.array([1.0, 0.75, 1.1, 0, 0.9], "<f4").tobytes()], r"outside \[0, 1\)"),
    ([M.TOPIC_PHASE, _phase_frames()[1], np.array([0.25, 0.75, -1, 0, 0.9], "<f4").tobytes()], "phase_rate"),
])
def test_schema_rejects_malformed_phase_messages(frames, match):
    with pytest.raises(M.MessageError, match=match):
        M.decode(frames)
    M.decode(_phase_frames())  # the well-formed one passes


# ------------------------------------------------------------------------------------ the runtime
def _runtime(tmp_path, policy="generic", publisher=None, walker=""):
    sim = [0.0]
    cfg = EdgeConfig(sources=[], calibration=CalibrationConfig(directory=tmp_path, max_gap_s=0.1))
    cfg.phase.other_mode_policy = policy
    cfg.runtime.walker = walker  # a declared walker: their profile once calibrated, whatever else identifies
    rt = Runtime(cfg, publisher=publisher or Collect(), store=ProfileStore(tmp_path), clock=lambda: sim[0])
    return rt, sim


@needs_hugadb
@pytest.mark.slow
def test_hold_while_warming_up_after_a_gap_and_no_phase_while_stale(tmp_path, db):
    raw = db.load("HuGaDB_v1_walking_08_02").raw
    rt, sim = _runtime(tmp_path)
    rt.start()
    try:
        _feed(rt, sim, raw, 0, 300)
        n_before_stall = len(rt.publisher.phase)
        sim[0] += 1.0  # the IMU stalls for a second: stale, then a gap
        time.sleep(0.2)
        assert len(rt.publisher.phase) == n_before_stall  # nothing is estimated from no input
        assert rt.stats.last_status == "HOLD"
        t0 = sim[0]
        for k in range(300, 400):  # fresh input again after the gap: the estimator restarts
            _feed_one(rt, sim, raw[k], t0 + (k - 299) / RATE)
        time.sleep(0.1)
    finally:
        rt.stop()
    after = [e for e, _ in rt.publisher.phase[n_before_stall:]]
    warm = PhaseStreamConfig().warmup_samples
    assert all(e.status == "HOLD" and e.reason.startswith("phase warming up") and e.phase == (0.0, 0.0)
               for e in after[:warm])
    assert sum(e.status == "OK" for e in after[warm:]) > 0.8 * len(after[warm:])


def _feed_one(rt, sim, row, t):
    sim[0] = t
    taken = rt.stats.samples + rt.gate.stale_samples
    rt.push_imu(row, t)
    deadline = time.monotonic() + 2.0
    while rt.stats.samples + rt.gate.stale_samples == taken and time.monotonic() < deadline:
        time.sleep(0.0002)


@needs_hugadb
@pytest.mark.slow
def test_phase_on_the_wire_advances_and_matches_the_offline_estimator(tmp_path, db):
    """Real HuGaDB walk through a running runtime and its ZeroMQ publisher to a subscriber in another thread."""
    import zmq

    from metagait_edge.phase.dataset import features
    from metagait_edge.phase.model import RESOURCE_DIR, decode, load_phase_ensemble, predict_recording
    from metagait_edge.runtime.zmq_output import ZmqOutputConfig, ZmqPublisher

    rec = db.load("HuGaDB_v1_walking_08_02")
    n = 700
    offline = decode(predict_recording(load_phase_ensemble(RESOURCE_DIR / "all"), features(rec.physical()[:n], {})))
    # Samples come faster than real time here: a high-water mark that holds them all (at 58.8 Hz, 10 do).
    pub = ZmqPublisher(ZmqOutputConfig(endpoints=["tcp://127.0.0.1:*"], sndhwm=100000)).start()
    got, stop = [], threading.Event()

    def subscribe():
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"gait.")
        sock.setsockopt(zmq.RCVHWM, 100000)
        sock.connect(pub.bound_endpoints[0])
        while not stop.is_set():
            if sock.poll(20):
                got.append(M.decode(sock.recv_multipart()))  # validates every message
        sock.close(0)

    th = threading.Thread(target=subscribe, daemon=True)
    th.start()
    time.sleep(0.3)  # the subscription joins
    rt, sim = _runtime(tmp_path, publisher=pub)
    with contextlib.ExitStack() as stack:
        stack.callback(rt.stop)
        rt.start()
        _feed(rt, sim, rec.raw, 0, n)
        time.sleep(0.3)
    stop.set()
    th.join(2)
    phase = [m for m in got if m.topic == M.TOPIC_PHASE]
    seqs = [m.header["seq"] for m in phase]
    assert seqs == list(range(n)), "one gait.phase per IMU sample, none lost"
    ok = np.array([m.header["status"] == "OK" for m in phase])
    assert ok[60:].mean() > 0.95
    est = np.array([m.payload[:2] for m in phase]) * 100
    err = np.mod(est[ok] - offline["phase"][ok] + 50, 100) - 50
    assert np.abs(err).max() < 1e-3  # exactly the offline network on the same samples (float32 on the wire)
    steps = np.diff(est[ok, 0])
    assert np.mean((steps > 0) | (steps < -50)) > 0.95  # advances, wrapping once a stride
    assert all(m.header["t_input_ns"] <= m.header["t_ns"] for m in phase)
    traj = [m for m in got if m.topic == M.TOPIC_TRAJECTORY]
    assert len(traj) >= 5 and all(0 <= m.header["phase"] < 1 for m in traj)
    # The trajectory's phase is the estimator's: that of the last phase message sent before it (its input
    # sample), advanced to t_ns (here by at most the sample the simulated clock moved on meanwhile).
    sent = np.array([m.header["t_ns"] for m in phase])
    pairs = [(m.header["phase"], phase[np.searchsorted(sent, m.header["t_ns"]) - 1]) for m in traj]
    ahead = [(a - p.payload[0]) % 1.0 for a, p in pairs]
    assert all(p.header["status"] == "OK" for _, p in pairs) and max(ahead) < 0.05, ahead


@needs_hugadb
@pytest.mark.slow
@pytest.mark.parametrize("policy", ["generic", "hold"])
def test_walker_calibrated_in_walking_gets_generic_or_hold_on_stairs(tmp_path, db, policy):
    walk, mixed = db.load("HuGaDB_v1_walking_08_02"), db.load("HuGaDB_v1_various_08_05")
    rt, sim = _runtime(tmp_path, policy, walker="w08")
    rt.start()
    result = {}
    th = threading.Thread(target=lambda: result.setdefault("o", rt.calibrate("w08", 5, timeout_s=60)))
    try:
        th.start()
        _feed(rt, sim, walk.raw, 0, 900)
        th.join(30)
        assert result["o"].success, result["o"].reason
        assert ProfileStore(tmp_path).load("w08").meta["mode"] == "walking"
        act = np.asarray(mixed.act)
        up = np.flatnonzero((act[1:] == 3) & (act[:-1] == 1)) + 1  # walking -> stairs up
        a = int(up[2])  # the third flight, after a walking bout
        b = a + int(np.argmax(act[a:] != 3))  # its end
        t0, n_walk = sim[0], len(rt.publisher.traj)
        # Walking and two flights before it: the heel-strike detector's swing threshold (the median of recent swing
        # peaks) must have seen stair strides, or it misses them after level walking.
        for k in range(int(up[1]) - 250, b):
            if k == a:
                n_stairs, n_status = len(rt.publisher.traj), len(rt.publisher.status)
            if k == a + 60:  # a second into the stairs: the mode has switched
                n_traj = len(rt.publisher.traj)
            _feed_one(rt, sim, mixed.raw[k], t0 + (k - int(up[1]) + 251) / RATE)
        time.sleep(0.1)
    finally:
        rt.stop()
    modes = [e.mode for e, _ in rt.publisher.phase[-(b - a - 60):]]
    assert modes.count("stairs_up") > 0.8 * len(modes)
    status = rt.publisher.status[n_status:]
    on_stairs = [kw for _, kw in rt.publisher.traj[n_traj:]]
    assert any(kw["personalized"] for _, kw in rt.publisher.traj[n_walk:n_stairs])  # walking: the walker's profile
    if policy == "generic":
        assert on_stairs and not any(kw["personalized"] for kw in on_stairs), [kw["reason"] for kw in on_stairs]
        assert all(kw["reason"].startswith("mode stairs_up: personalized for walking") for kw in on_stairs), [kw["reason"] for kw in on_stairs]
    else:
        assert any(s == "HOLD" and r.startswith("mode stairs_up") for s, r in status), status
        assert not on_stairs


@needs_hugadb
def test_standing_puts_the_runtime_in_hold_with_the_mode(tmp_path, db):
    walk, stand = db.load("HuGaDB_v1_walking_08_02"), db.load("HuGaDB_v1_standing_08_00")
    rt, sim = _runtime(tmp_path)
    rt.start()
    try:
        _feed(rt, sim, walk.raw, 0, 400)
        assert rt.stats.last_status in ("OK", "DEGRADED")
        t0 = sim[0]
        for k in range(200):
            _feed_one(rt, sim, stand.raw[k % len(stand.raw)], t0 + (k + 1) / RATE)
        time.sleep(0.1)
        ref = rt.reference()
    finally:
        rt.stop()
    assert rt.stats.last_status == "HOLD" and rt.stats.last_reason == "mode standing: no periodic reference"
    assert ref is None
    assert rt.publisher.phase[-1][0].status == "HOLD" and rt.publisher.phase[-1][0].mode == "standing"


def test_phase_at_moves_the_estimate_at_its_rate_and_hold_carries_none():
    est = _estimate(t_s=10.0, phase=(0.9, 0.4), rate_hz=1.0)
    assert est.phase_at(10.0) == pytest.approx(0.9)
    assert est.phase_at(10.2) == pytest.approx(0.1)  # wraps past the next initial contact
    assert est.phase_at(9.9) == pytest.approx(0.8)  # a reference stamped one tenth of a second earlier
    assert _estimate(status="HOLD", phase=(0.0, 0.0), rate_hz=0.0).phase_at(11.0) == 0.0


@pytest.mark.slow
def test_runtime_for_the_ros_nodes_masks_the_replayed_files_corrupted_gyros(tmp_path):
    from metagait_edge.runtime.orchestrator import build_runtime

    rt = build_runtime(backend="torch", calibration_dir=str(tmp_path), recording="HuGaDB_v1_walking_03_00")
    try:
        assert [s for s, ok in rt.phase.valid.items() if not ok] == ["rf", "rs", "rt"]  # the authors' table
    finally:
        rt.stop()
    plain = build_runtime(backend="torch", calibration_dir=str(tmp_path))
    try:
        assert all(plain.phase.valid.values())
    finally:
        plain.stop()
