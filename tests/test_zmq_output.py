from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from metagait_edge.cli import main
from metagait_edge.commands.listen import listen
from metagait_edge.runtime import zmq_schema as M
from metagait_edge.runtime.zmq_output import ZmqOutputConfig, ZmqPublisher, generate_keys

CH = ["hip_r", "knee_r", "ankle_r"]


def _traj(k=0.0):
    return (np.arange(3 * 101, dtype=np.float32).reshape(3, 101) / 10 + k)


def _header(**kw):
    h = M.trajectory_header(7, _traj(), CH, walker_id="w01", personalized=True, phase=0.25, cycle_s=1.1)
    h.update(kw)
    return h


# ------------------------------------------------------------------------------------------ schema
def test_encode_decode_roundtrip():
    frames = M.encode(M.TOPIC_TRAJECTORY, _header(), _traj())
    assert frames[0] == b"gait.trajectory" and len(frames[2]) == 3 * 101 * 4
    assert np.array_equal(np.frombuffer(frames[2], "<f4"), _traj().ravel())  # little-endian, C order
    msg = M.decode(frames)
    assert msg.header["walker_id"] == "w01" and msg.header["shape"] == [3, 101] and msg.header["channels"] == CH
    assert np.array_equal(msg.payload, _traj())
    status = M.decode(M.encode(M.TOPIC_STATUS, M.make_header(0, status="HOLD", reason="IMU stale")))
    assert status.payload.shape == (0,) and status.header["status"] == "HOLD"


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda f: [f[0], f[1]], "3 frames"),
        (lambda f: [b"gait.other", f[1], f[2]], "unknown topic"),
        (lambda f: [f[0], b"\xc1garbage", f[2]], "msgpack"),
        (lambda f: [f[0], msgpack.packb(_header(v=2)), f[2]], "schema version 2"),
        (lambda f: [f[0], msgpack.packb(_header(dtype="float64")), f[2]], "dtype"),
        (lambda f: [f[0], f[1], f[2][:-4]], "payload has 1208 bytes"),
        (lambda f: [f[0], msgpack.packb(_header(channels=CH[:2])), f[2]], "2 channel names for 3 rows"),
        (lambda f: [f[0], f[1], np.full(303, np.nan, "<f4").tobytes()], "NaN"),
        (lambda f: [f[0], msgpack.packb({k: v for k, v in _header().items() if k != "seq"}), f[2]], "lacks field"),
        (lambda f: [f[0], msgpack.packb(_header(personalized=1)), f[2]], "'personalized'"),
        (lambda f: [f[0], msgpack.packb(_header(status="HOLD")), f[2]], "never published with status HOLD"),
        (lambda f: [f[0], msgpack.packb(_header(phase=1.5)), f[2]], "phase"),
        (lambda f: [f[0], msgpack.packb(_header(t_input_ns=_header()["t_ns"] + 10**9)), f[2]], "newer than the message"),
        (lambda f: [f[0], msgpack.packb(_header(t_input_ns=0)), f[2]], "newest IMU sample"),
        (lambda f: [f[0], msgpack.packb(_header(counters={"holds": -1})), f[2]], "counters"),
        (lambda f: [f[0], msgpack.packb({k: v for k, v in _header().items() if k != "t_input_ns"}), f[2]],
         "lacks field.*t_input_ns"),
    ],
)
def test_validation_names_the_problem(mutate, match):
    frames = M.encode(M.TOPIC_TRAJECTORY, _header(), _traj())
    with pytest.raises(M.MessageError, match=match):
        M.decode(mutate(frames))


# ------------------------------------------------------------------------------------------ publisher
def _sub(ctx, endpoint, topics=(b"",), curve=None):
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    if curve:
        s.curve_publickey, s.curve_secretkey, s.curve_serverkey = curve
    for t in topics:
        s.setsockopt(zmq.SUBSCRIBE, t)
    s.connect(endpoint)
    return s


def _recv_while_publishing(pub, sub, publish, until, timeout=3.0):
    """Publish every 10 ms until ``until(messages)`` or timeout (PUB/SUB joins take a moment)."""
    got = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and not until(got):
        publish()
        if sub.poll(10):
            while sub.poll(0):
                got.append(M.decode(sub.recv_multipart()))
    return got


@contextlib.contextmanager
def _publisher(**kw):
    cfg = ZmqOutputConfig(**{"endpoints": ["tcp://127.0.0.1:*"], **kw})
    pub = ZmqPublisher(cfg).start()
    try:
        yield pub
    finally:
        pub.stop()


def test_publisher_sends_all_four_topics_with_per_topic_sequence():
    from metagait_edge.runtime.phase_stream import PhaseEstimate

    ctx = zmq.Context.instance()
    est = PhaseEstimate(0.0, (0.25, 0.75), 1.1, "stairs_up", 2, 0.9, "OK", "", "phasenet")
    # Room for every message: at the default high-water mark (10) a subscriber slowed by a busy machine loses
    # messages, as documented (seq gaps), and this test is about the sequence numbers, not that loss.
    with _publisher(sndhwm=10_000, queue_size=10_000) as pub:
        sub = _sub(ctx, pub.bound_endpoints[0])
        try:
            def publish():
                pub.publish_trajectory(_traj(), CH, walker_id="w01", personalized=True, phase=0.5, cycle_s=1.05)
                pub.publish_identity("w01", 0.31, 0.92, embedding=np.ones(8))
                pub.publish_status("DEGRADED", "identity confidence low")
                pub.publish_phase(est, walker_id="w01", t_input_ns=time.time_ns() - 1000)

            got = _recv_while_publishing(pub, sub, publish, lambda g: len({m.topic for m in g}) == 4 and len(g) >= 12)
        finally:
            sub.close(0)
    by_topic = {t: [m for m in got if m.topic == t] for t in M.TOPICS}
    assert all(by_topic[t] for t in M.TOPICS)
    tr = by_topic[M.TOPIC_TRAJECTORY][-1]
    assert np.array_equal(tr.payload, _traj()) and tr.header["cycle_s"] == 1.05 and tr.header["units"] == "deg"
    ident = by_topic[M.TOPIC_IDENTITY][-1]
    assert ident.header["distance"] == pytest.approx(0.31) and ident.payload.shape == (8,)
    assert by_topic[M.TOPIC_STATUS][-1].header["reason"] == "identity confidence low"
    ph = by_topic[M.TOPIC_PHASE][-1]
    assert ph.payload.tolist() == pytest.approx([0.25, 0.75, 1.1, 2, 0.9])
    assert (ph.header["mode"], ph.header["source"], ph.header["phase"]) == ("stairs_up", "phasenet", 0.25)
    assert ph.header["cycle_s"] == pytest.approx(1 / 1.1) and ph.header["channels"] == list(M.PHASE_CHANNELS)
    for t in M.TOPICS:
        seqs = [m.header["seq"] for m in by_topic[t]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (t, seqs, pub.stats)
    assert abs(time.time_ns() - tr.header["t_ns"]) < 5e9


def test_inline_trajectories_are_sent_before_publish_returns():
    with _publisher() as pub:
        before = pub.stats.sent
        assert pub.publish_trajectory(_traj(), CH, walker_id=None, personalized=False, phase=0.0, cycle_s=1.0)
        assert pub.stats.sent == before + 1  # no publisher-thread hand-off on the control path
    assert not pub.publish_trajectory(_traj(), CH, walker_id=None, personalized=False, phase=0.0, cycle_s=1.0)
    assert pub.stats.sent == before + 1  # a stopped publisher sends nothing
    with _publisher(inline_trajectories=False) as pub:
        pub.publish_trajectory(_traj(), CH, walker_id=None, personalized=False, phase=0.0, cycle_s=1.0)
        end = time.monotonic() + 2
        while pub.stats.sent == 0 and time.monotonic() < end:
            time.sleep(0.005)
        assert pub.stats.sent == 1  # the publisher thread sent it


def test_ipc_endpoint_and_topic_filter():
    d = tempfile.mkdtemp(prefix="mg", dir="/tmp")  # ipc paths must stay short
    try:
        ep = f"ipc://{d}/out.sock"
        ctx = zmq.Context.instance()
        with _publisher(endpoints=[ep]) as pub:
            sub = _sub(ctx, ep, topics=[M.TOPIC_STATUS])
            try:
                def publish():
                    pub.publish_status("OK")
                    pub.publish_trajectory(_traj(), CH, walker_id=None, personalized=False, phase=0.0, cycle_s=1.0)

                got = _recv_while_publishing(pub, sub, publish, lambda g: len(g) >= 3)
            finally:
                sub.close(0)
        assert len(got) >= 3 and {m.topic for m in got} == {M.TOPIC_STATUS}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_producer_never_blocks_queue_and_slow_subscriber_drops_are_counted():
    ctx = zmq.Context.instance()
    with _publisher(queue_size=4, sndhwm=2, inline_trajectories=False) as pub:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 2)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(pub.bound_endpoints[0])
        try:
            _recv_while_publishing(pub, sub, lambda: pub.publish_status("OK"), lambda g: len(g) > 0)
            n = 3000
            big = np.zeros((64, 101), np.float32)
            names = [f"j{i}" for i in range(64)]
            accepted = sum(
                pub.publish_trajectory(big, names, walker_id=None, personalized=False, phase=0.0, cycle_s=1.0)
                for _ in range(n)
            )  # the subscriber reads nothing meanwhile
            time.sleep(0.3)
            st = pub.stats
            seqs = []
            while sub.poll(100):
                m = M.decode(sub.recv_multipart())
                if m.topic == M.TOPIC_TRAJECTORY:
                    seqs.append(m.header["seq"])
        finally:
            sub.close(0)
    assert st.dropped_queue_full > 0 and accepted + st.dropped_queue_full == n
    assert len(seqs) < n // 10  # the stalled subscriber got only what its small queues hold
    assert seqs and max(seqs) > len(seqs)  # and the losses show up as sequence gaps


def test_bind_failure_is_reported_by_start():
    with _publisher() as pub:
        ep = pub.bound_endpoints[0]
        with pytest.raises(OSError, match="cannot bind"):
            ZmqPublisher(ZmqOutputConfig(endpoints=[ep])).start()


def test_config_rejects_bad_endpoints():
    with pytest.raises(ValueError, match="endpoint"):
        ZmqOutputConfig(endpoints=["udp://127.0.0.1:1"])
    with pytest.raises(ValueError, match="trajectory must be"):
        ZmqPublisher().publish_trajectory(np.zeros((2, 101)), CH, walker_id=None, personalized=False, phase=0, cycle_s=1)


# ------------------------------------------------------------------------------------------ CURVE + listen
def _publish_in_background(pub, stop):
    def loop():
        while not stop.is_set():
            pub.publish_trajectory(_traj(), CH, walker_id="w02", personalized=True, phase=0.1, cycle_s=1.0)
            pub.publish_status("OK")
            time.sleep(0.01)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return th


def test_curve_only_the_authorized_client_receives(tmp_path, capsys):
    keys = generate_keys(tmp_path / "keys")
    other = generate_keys(tmp_path / "other")  # a key pair the server does not know
    with _publisher(curve_server_secret_key=keys["server_secret"],
                    curve_allowed_clients_dir=keys["allowed_clients_dir"]) as pub:
        ep = pub.bound_endpoints[0]
        stop = threading.Event()
        th = _publish_in_background(pub, stop)
        try:
            lines = []
            # The doc's command as written: --client-keys keys/ (the folder also holds server.key_secret).
            ok = listen(ep, count=4, timeout=5, server_key=str(keys["server_public"]),
                        client_keys=str(tmp_path / "keys"), out=lines.append)
            plain = listen(ep, timeout=0.8, out=lines.append)
            wrong_server = listen(ep, timeout=0.5, server_key=str(other["server_public"]),
                                  client_keys=str(keys["client_secret"]), out=lines.append)
            unknown_client = listen(ep, timeout=0.5, server_key=str(keys["server_public"]),
                                    client_keys=str(other["client_secret"]), out=lines.append)
        finally:
            stop.set()
            th.join(2)
    assert ok.total == 4 and ok.invalid == 0
    assert plain.total == 0 and wrong_server.total == 0 and unknown_client.total == 0


def test_listen_command_summary_and_exit_codes(capsys):
    with _publisher() as pub:
        ep = pub.bound_endpoints[0]
        stop = threading.Event()
        th = _publish_in_background(pub, stop)
        try:
            rc = main(["listen", "--endpoint", ep, "--count", "6", "--timeout", "5", "--topics", "gait.trajectory"])
        finally:
            stop.set()
            th.join(2)
    out = capsys.readouterr().out
    assert rc == 0
    assert "received 6 valid message(s)" in out and "gait.trajectory: 6 received" in out
    assert "gait.status" not in out and "latency ms" in out and "walker=w02" in out
    assert "trajectory input age ms" in out
    # Nobody publishing: --count not reached before --timeout.
    assert main(["listen", "--endpoint", ep, "--count", "1", "--timeout", "0.3"]) == 3
    # A run that never produced a trajectory is not a success when one is required (issue 16 #1).
    assert main(["listen", "--endpoint", ep, "--timeout", "0.3", "--require", "gait.trajectory"]) == 4
    assert "no valid message on gait.trajectory" in capsys.readouterr().err


def test_listen_exits_nonzero_on_invalid_messages(capsys):
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.bind("tcp://127.0.0.1:*")
    ep = raw.getsockopt_string(zmq.LAST_ENDPOINT)
    stop = threading.Event()
    bad = M.encode(M.TOPIC_TRAJECTORY, _header(), _traj())
    bad[2] = bad[2][:-8]  # truncated payload

    def loop():
        while not stop.is_set():
            raw.send_multipart(bad)
            time.sleep(0.01)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    try:
        rc = main(["listen", "--endpoint", ep, "--count", "2", "--timeout", "5"])
    finally:
        stop.set()
        th.join(2)
        raw.close(0)
    out = capsys.readouterr().out
    assert rc == 1 and "2 invalid" in out and "payload has 1204 bytes" in out


def test_gen_keys_command(tmp_path, capsys):
    import os
    import stat

    import zmq.auth

    old = os.umask(0o022)  # the usual umask: files would be world-readable unless written otherwise
    try:
        assert main(["listen", "--gen-keys", str(tmp_path / "k")]) == 0
    finally:
        os.umask(old)
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret", "authorized_clients/client.key"):
        path = tmp_path / "k" / name
        public, secret = zmq.auth.load_certificate(str(path))
        assert len(public) == 40 and (secret is not None) == name.endswith("_secret")
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if name.endswith("_secret") else 0o644), (name, oct(mode))
    assert not list((tmp_path / "k").glob(".*.tmp"))  # atomic writes leave no temporary file behind
    assert zmq.auth.load_certificate(str(tmp_path / "k" / "authorized_clients" / "client.key"))[0] == \
        zmq.auth.load_certificate(str(tmp_path / "k" / "client.key"))[0]
    assert "server.key_secret" in capsys.readouterr().out
    assert main(["listen", "--server-key", str(tmp_path / "missing.key"), "--client-keys", str(tmp_path / "k")]) == 1


def test_output_config_from_yaml_mapping(tmp_path):
    from metagait_edge.config import ConfigError, from_dict

    cfg = from_dict(ZmqOutputConfig, {"endpoints": ["ipc:///tmp/x.sock"], "curve_server_secret_key": "k/server.key_secret"})
    assert cfg.curve_server_secret_key.name == "server.key_secret" and cfg.sndhwm == 10
    with pytest.raises(ConfigError, match="snd_hwm"):
        from_dict(ZmqOutputConfig, {"snd_hwm": 5})


def test_curve_key_problems_are_reported_by_start(tmp_path):
    keys = generate_keys(tmp_path / "keys")
    with pytest.raises(ValueError, match="no secret key"):
        ZmqPublisher(ZmqOutputConfig(endpoints=["tcp://127.0.0.1:*"], curve_server_secret_key=keys["server_public"])).start()
    with pytest.raises(FileNotFoundError, match="allowed clients folder"):
        ZmqPublisher(ZmqOutputConfig(endpoints=["tcp://127.0.0.1:*"], curve_server_secret_key=keys["server_secret"],
                                     curve_allowed_clients_dir=tmp_path / "nope")).start()
    with pytest.raises(FileNotFoundError, match="--gen-keys"):
        ZmqPublisher(ZmqOutputConfig(endpoints=["tcp://127.0.0.1:*"], curve_server_secret_key=tmp_path / "x")).start()


def test_publisher_refuses_trajectories_the_protocol_forbids():
    pub = ZmqPublisher()
    kw = dict(walker_id=None, personalized=False, phase=0.0, cycle_s=1.0)
    with pytest.raises(ValueError, match="use publish_status for HOLD"):
        pub.publish_trajectory(_traj(), CH, status="HOLD", **kw)
    bad = _traj()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        pub.publish_trajectory(bad, CH, **kw)
    assert pub.stats.queued == 0


def test_protocol_doc_states_the_fields_channels_and_defaults_the_code_uses():
    """docs/zmq_protocol.md is what a controller is written from: its facts must be the code's."""
    from pathlib import Path

    from metagait_edge.runtime.config import RuntimeConfig
    from metagait_edge.runtime.personalizer import ANGLE_CHANNELS
    from metagait_edge.runtime.safety import SafetyConfig, anatomical_joint_limits, relative_joint_limits

    doc = (Path(__file__).resolve().parents[1] / "docs" / "zmq_protocol.md").read_text(encoding="utf-8")
    for key in M.HEADER_FIELDS:
        assert f"| `{key}` |" in doc, f"header field {key} is not in the doc's header table"
    assert ", ".join(ANGLE_CHANNELS) in doc.replace(",\n", ", ")
    safety, rc = SafetyConfig(), RuntimeConfig()
    assert f"`safety.staleness_timeout_s`\n({safety.staleness_timeout_s} s" in doc
    assert f"`runtime.status_period_s` ({rc.status_period_s} s" in doc
    for limits in (relative_joint_limits(), anatomical_joint_limits()):
        hip, knee = limits["hip_r"], limits["knee_r"]
        assert f"{hip.max_rate_dps:.0f}" in doc and f"{knee.max_rate_dps:.0f}" in doc
    rel = relative_joint_limits()
    assert f"hip −{-rel['hip_r'].min_deg:.0f}/+{rel['hip_r'].max_deg:.0f}°" in doc
    assert f"knee −{-rel['knee_r'].min_deg:.0f}/+{rel['knee_r'].max_deg:.0f}°" in doc
    assert f"`safety.max_clipped_fraction` ({100 * safety.max_clipped_fraction:.0f} %)" in doc
    import re

    compile(re.search(r"## Python subscriber.*?```python\n(.*?)```", doc, re.S).group(1), "python-subscriber", "exec")


def test_the_docs_c_sketch_builds_with_the_documented_line(tmp_path):
    """docs/zmq_protocol.md's C subscriber, built exactly as the doc says (where libzmq and msgpack-c are installed)."""
    import re
    import shutil
    import subprocess
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "zmq_protocol.md").read_text(encoding="utf-8")
    line = re.search(r"```bash\n(cc [^\n]*gait_sub\.c[^\n]*)\n```", doc).group(1)
    if shutil.which("cc") is None or subprocess.run(["pkg-config", "--exists", "libzmq", "msgpack"]).returncode:
        pytest.skip("no C compiler, or pkg-config does not know libzmq and msgpack (apt: libzmq3-dev libmsgpack-dev)")
    (tmp_path / "gait_sub.c").write_text(re.search(r"```c\n(.*?)```", doc, re.S).group(1))
    out = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and (tmp_path / "gait_sub").is_file(), out.stderr
