"""Failures that change behaviour are WARNINGs with the reason, counted, and distinguishable on the wire:
a serial port that does not exist (issue 16 #6), a corrupt or tampered walker profile (#7)."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metagait_edge.runtime.capture import free_tcp_port  # noqa: E402
from metagait_edge.runtime.config import CalibrationConfig, EdgeConfig, RuntimeConfig  # noqa: E402
from metagait_edge.runtime.orchestrator import Runtime  # noqa: E402
from metagait_edge.runtime.profiles import ProfileStore  # noqa: E402
from metagait_edge.runtime.safety import NO_PROFILE, PROFILE_UNUSABLE  # noqa: E402


@pytest.mark.slow
def test_missing_serial_port_is_a_warning_counted_and_on_the_wire(tmp_path, caplog, capsys):
    import zmq

    from metagait_edge.cli import main
    from metagait_edge.runtime import zmq_schema as M

    port = str(tmp_path / "ttyDOESNOTEXIST")
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"sources:\n  - kind: serial\n    port: {port}\nsinks:\n  zmq:\n    endpoints: [\"{endpoint}\"]\n"
                   f"calibration:\n  directory: {tmp_path / 'walkers'}\nruntime:\n  status_period_s: 0.2\n"
                   f"  freeze_gc: false\n")
    statuses, stop = [], threading.Event()

    def subscriber():  # every status message, validated, until the run has ended (however slow its start-up)
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"gait.status")
        sock.connect(endpoint)
        while not stop.is_set():
            if sock.poll(50):
                statuses.append(M.decode(sock.recv_multipart()).header)
        sock.close(0)

    sub = threading.Thread(target=subscriber)
    sub.start()
    with caplog.at_level(logging.WARNING):
        rc = main(["run", "--config", str(cfg), "--duration", "2.5"])
    stop.set()
    sub.join()
    out = capsys.readouterr()
    assert rc == 1 and port in out.err  # the run never had input: not a success
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and port in r.getMessage()]
    assert warnings and len(warnings) <= 2  # named once per distinct error, not once per retry
    failures = int(out.out.split("open_failures=")[1].split()[0])
    assert failures >= 2  # retried, and counted
    holds = [h for h in statuses if h["status"] == "HOLD"]
    assert holds and all(port in h["reason"] for h in holds[-2:]), statuses[-2:]  # a subscriber sees why
    assert holds[-1]["counters"]["open_failures"] >= 2  # and the count


def _runtime(tmp_path, walker):
    cfg = EdgeConfig(sources=[], calibration=CalibrationConfig(directory=tmp_path),
                     runtime=RuntimeConfig(walker=walker))
    return Runtime(cfg, store=ProfileStore(tmp_path))


def _save_profile(rt, store, walker):
    from metagait_edge.runtime.profiles import Profile

    p = rt.personalizer
    weights = {k: v.cpu().numpy() for k, v in p.base.items() if k in p.maml.adapt_names}  # unadapted weights
    n = len(p.channels)
    store.save(Profile(walker=walker, weights=weights, template=np.zeros((n, 101), np.float32),
                       valid=np.ones(n, bool), meta={}))


def _degraded_reason(rt):
    t = np.linspace(0, 2 * np.pi, 101)
    rows = np.stack([10 + 20 * np.sin(t + k) for k in range(6)]).astype(np.float32)
    r = rt.safety.apply(rows, rt.channel_names, 1.0, 1.0, 0.0, False, 1.0, rows.mean(axis=1),
                        unusable_profile=rt._profile_errors.get(rt.walker))
    return r.reason


@pytest.mark.parametrize("damage", ["corrupt_json", "checksum"])
def test_unusable_profile_is_a_warning_and_differs_on_the_wire_from_never_calibrated(tmp_path, caplog, damage):
    store = ProfileStore(tmp_path)
    never = _runtime(tmp_path, "bob")
    assert _degraded_reason(never).startswith(NO_PROFILE)
    _save_profile(never, store, "alice")
    folder = store.folder("alice")
    if damage == "corrupt_json":
        (folder / "profile.json").write_text("{ not json")
    else:
        meta = json.loads((folder / "profile.json").read_text())
        w = folder / meta["weights"]
        data = bytearray(w.read_bytes())
        data[-1] ^= 0xFF
        w.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO):
        rt = _runtime(tmp_path, "alice")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "alice" in r.getMessage()]
    assert warned, [r.getMessage() for r in caplog.records]
    reason = _degraded_reason(rt)
    assert reason.startswith(PROFILE_UNUSABLE) and ("JSON" in reason or "SHA-256" in reason), reason


def test_an_unknown_walker_gets_the_generic_model_at_once(tmp_path):
    """Issue 16 #9: a stranger (rejected by the gallery) must not keep the last walker's personalized model."""
    from metagait_edge.runtime.camera import IdentityResult

    store = ProfileStore(tmp_path)
    _save_profile(_runtime(tmp_path, "bob"), store, "alice")
    rt = _runtime(tmp_path, "alice")
    assert rt.has_profile and rt.walker == "alice"
    stranger = IdentityResult(None, "alice", 0.9, 0.0, 30, np.zeros(4, np.float32))
    rt._on_identity(stranger)  # one rejected window is enough to drop to the generic model
    assert rt.walker is None and rt.confidence == 0.0 and not rt.has_profile
    assert _degraded_reason(rt).startswith(NO_PROFILE)
