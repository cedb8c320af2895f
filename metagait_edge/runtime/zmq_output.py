"""ZeroMQ PUB output of trajectories, identities and status (schema: ``runtime.zmq_schema``).

The control path never waits on a subscriber: every send uses ``zmq.NOBLOCK`` under a small send
high-water mark, so a slow or absent subscriber only loses messages (visible to it as ``seq`` gaps),
never delays the producer. Trajectories are encoded and sent in the caller's thread (the gait worker)
when ``inline_trajectories`` is set: a hand-off to another Python thread costs an interpreter-lock
switch (about 0.5 ms, more under load) on the control path. Identity and status messages, and
trajectories otherwise, go through a bounded queue (a full queue drops the message and counts it) to a
dedicated publisher thread. A lock serializes the socket between the two (ZeroMQ sockets may change
threads behind a full memory barrier).

Optional CURVE: the server loads its secret key file; a ``ThreadAuthenticator`` admits only clients
whose public key file is in ``curve_allowed_clients_dir``. Keys come from ``generate_keys`` (also
``metagait-edge listen --gen-keys DIR``).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from metagait_edge.runtime.worker import ThreadOwner
from metagait_edge.runtime import zmq_schema as M

log = logging.getLogger(__name__)
_F32_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # the largest float32 phase below 1


@dataclass
class ZmqOutputConfig:
    endpoints: List[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5556"])
    sndhwm: int = 10
    queue_size: int = 32
    linger_ms: int = 0
    inline_trajectories: bool = True  # send trajectories and gait.phase from the producer's thread (module doc)
    curve_server_secret_key: Optional[Path] = None  # e.g. keys/server.key_secret; enables CURVE
    curve_allowed_clients_dir: Optional[Path] = None  # public keys of allowed clients; None: any client with the server key

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("endpoints must name at least one tcp:// or ipc:// endpoint")
        for ep in self.endpoints:
            if not ep.startswith(("tcp://", "ipc://", "inproc://")):
                raise ValueError(f"endpoint {ep!r} must start with tcp://, ipc:// or inproc://")
        if self.sndhwm < 1 or self.queue_size < 1:
            raise ValueError("sndhwm and queue_size must be >= 1")
        if self.curve_allowed_clients_dir is not None and self.curve_server_secret_key is None:
            raise ValueError("curve_allowed_clients_dir needs curve_server_secret_key")


@dataclass(frozen=True)
class PublisherStats:
    queued: int  # accepted: queued for the publisher thread, or sent inline
    sent: int
    dropped_queue_full: int  # the publisher thread fell behind the producer
    # libzmq refused the send (EAGAIN). A PUB socket drops silently per subscriber at its high-water
    # mark, so slow-subscriber losses are not counted here; subscribers see them as seq gaps.
    dropped_hwm: int
    send_errors: int


def _certificate(public: bytes, secret: Optional[bytes]) -> str:
    """A ZeroMQ certificate file (``zmq.auth`` format, read back by ``zmq.auth.load_certificate``)."""
    kind = "Secret" if secret else "Public"
    lines = [f"#   ZeroMQ CURVE **{kind}** Certificate (metagait-edge listen --gen-keys)",
             "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions." if secret else
             "#   Exchange securely, or use a secure mechanism to verify the contents", "",
             "metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def generate_keys(directory: str | Path) -> dict:
    """Create a CURVE server and client key pair in ``directory``.

    Layout: ``server.key`` / ``server.key_secret``, ``client.key`` / ``client.key_secret``, and
    ``authorized_clients/client.key`` (the folder to give the server as allowed clients). Each file is
    written atomically; secret key files are 0600 from their creation (never readable by others, whatever
    the umask). Existing files are replaced by fresh keys.
    """
    import zmq

    from metagait_edge.atomic import atomic_write_text

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    allowed = d / "authorized_clients"
    allowed.mkdir(exist_ok=True)
    out = {"allowed_clients_dir": allowed}
    for name in ("server", "client"):
        public, secret = zmq.curve_keypair()
        atomic_write_text(d / f"{name}.key_secret", _certificate(public, secret), mode=0o600)
        atomic_write_text(d / f"{name}.key", _certificate(public, None))
        out[f"{name}_public"], out[f"{name}_secret"] = d / f"{name}.key", d / f"{name}.key_secret"
    atomic_write_text(allowed / "client.key", _certificate(public, None))  # the client's public key
    return out


def load_keypair(path: str | Path) -> tuple[bytes, Optional[bytes]]:
    """(public, secret) from a ZeroMQ certificate file; secret is None for a public-only file."""
    import zmq.auth

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CURVE key file {p} does not exist (create keys with `metagait-edge listen --gen-keys DIR`)")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (ValueError, OSError) as exc:
        raise ValueError(f"{p}: not a ZeroMQ certificate file: {exc}") from None
    return public, secret


class ZmqPublisher(ThreadOwner):
    """``start()`` binds every endpoint (errors raise here); ``publish_*`` never block; ``stop()`` joins."""

    thread_label = "ZeroMQ publisher"

    def __init__(self, config: Optional[ZmqOutputConfig] = None, context=None, realtime_priority: int = 0) -> None:
        self.config = config or ZmqOutputConfig()
        self._ctx = context
        self.realtime_priority = realtime_priority  # SCHED_FIFO for the private context's I/O thread (0: off)
        self._queue: "queue.Queue" = queue.Queue(maxsize=self.config.queue_size)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._seq = {t: 0 for t in M.TOPICS}
        self._seq_lock = threading.Lock()  # publish_* may be called from more than one producer thread
        self._sock_lock = threading.Lock()  # the socket: publisher thread and inline trajectory sends
        self._sock = None
        self._queued = self._sent = self._drop_q = self._drop_hwm = self._errors = 0
        self._auth = None
        self._own_ctx = None
        self.bound_endpoints: list[str] = []

    # ------------------------------------------------------------------------------------- control
    def start(self, timeout: float = 5.0) -> "ZmqPublisher":
        if self._thread is not None:
            raise RuntimeError("ZmqPublisher already started")
        self._thread = threading.Thread(target=self._run, name="zmq-publisher", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"ZeroMQ publisher did not start within {timeout} s")
        if self._start_error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise self._start_error
        return self

    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(self._queued, self._sent, self._drop_q, self._drop_hwm, self._errors)

    # ------------------------------------------------------------------------------------ producers
    def _enqueue(self, topic: bytes, fields: dict, payload: Optional[np.ndarray]) -> bool:
        with self._seq_lock:
            seq = self._seq[topic]
            self._seq[topic] = seq + 1
            try:
                self._queue.put_nowait((topic, seq, fields, payload))
            except queue.Full:
                self._drop_q += 1
                return False
            self._queued += 1
        return True

    def _send(self, topic: bytes, seq: int, fields: dict, payload: Optional[np.ndarray]) -> bool:
        with self._sock_lock:
            return self._send_locked(topic, seq, fields, payload)

    def _send_locked(self, topic: bytes, seq: int, fields: dict, payload: Optional[np.ndarray]) -> bool:
        import zmq

        if self._sock is None:  # stopped
            return False
        try:
            frames = M.encode(topic, M.make_header(seq, **fields), payload)
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            self._sent += 1
            return True
        except zmq.Again:
            self._drop_hwm += 1
        except (zmq.ZMQError, ValueError, TypeError) as exc:
            self._errors += 1
            log.warning("ZeroMQ publish failed: %s", exc)
        return False

    def _send_inline(self, topic: bytes, fields: dict, payload: Optional[np.ndarray]) -> bool:
        with self._sock_lock:  # held across seq and send: messages leave in the order of their seq
            with self._seq_lock:
                seq = self._seq[topic]
                self._seq[topic] = seq + 1
                self._queued += 1
            return self._send_locked(topic, seq, fields, payload)

    def publish_trajectory(
        self, trajectory: np.ndarray, channels: Sequence[str], *, walker_id: Optional[str], personalized: bool,
        phase: float, cycle_s: float, status: str = "OK", reason: str = "", confidence: float = 0.0,
        t_ns: Optional[int] = None, t_input_ns: Optional[int] = None,
    ) -> bool:
        """Send (or queue) one reference trajectory (float32 [C, 101], degrees); False if it was dropped.

        ``t_input_ns``: CLOCK_REALTIME ns of the newest IMU sample it was computed from (default: ``t_ns``)."""
        traj = np.array(trajectory, dtype=np.float32, copy=True)  # the caller may reuse its buffer
        if traj.ndim != 2 or traj.shape[1] != M.N_POINTS or traj.shape[0] != len(channels):
            raise ValueError(f"trajectory must be [len(channels)={len(channels)}, {M.N_POINTS}], got {traj.shape}")
        if status not in ("OK", "DEGRADED"):
            # HOLD means "no reference": announce it with publish_status("HOLD", reason), never with values.
            raise ValueError(f"a trajectory's status must be OK or DEGRADED, got {status!r}; use publish_status for HOLD")
        if not np.isfinite(traj).all():
            raise ValueError("trajectory contains NaN or Inf; pass it through the SafetyEnvelope first")
        t_ns = M.now_ns() if t_ns is None else t_ns
        fields = dict(
            t_ns=t_ns, t_input_ns=t_ns if t_input_ns is None else t_input_ns, walker_id=walker_id,
            personalized=personalized, phase=phase, cycle_s=cycle_s, shape=traj.shape, channels=list(channels), units="deg",
            status=status, reason=reason, confidence=confidence,
        )
        if self.config.inline_trajectories:
            return self._send_inline(M.TOPIC_TRAJECTORY, fields, traj)
        return self._enqueue(M.TOPIC_TRAJECTORY, fields, traj)

    def publish_phase(self, estimate, *, walker_id: Optional[str], t_input_ns: int, t_ns: Optional[int] = None) -> bool:
        """One ``gait.phase`` message from a ``phase_stream.PhaseEstimate`` (per IMU sample); sent from the
        caller's thread under the same rule as trajectories (``inline_trajectories``)."""
        # a phase just below 1 must not round up to 1 in float32 (Python floats: this runs every IMU sample)
        phases = [min(float(p), _F32_BELOW_ONE) for p in estimate.phase]
        values = np.array([*phases, estimate.rate_hz, estimate.mode_index, estimate.confidence], np.float32)
        rate = float(values[2])
        fields = dict(
            t_ns=M.now_ns() if t_ns is None else t_ns, t_input_ns=t_input_ns, walker_id=walker_id,
            phase=float(values[0]), cycle_s=1.0 / rate if rate > 0 else 0.0, shape=values.shape,
            channels=M.PHASE_CHANNELS, status=estimate.status, reason=estimate.reason,
            confidence=float(values[4]), mode=estimate.mode, source=estimate.source,
        )
        if self.config.inline_trajectories:
            return self._send_inline(M.TOPIC_PHASE, fields, values)
        return self._enqueue(M.TOPIC_PHASE, fields, values)

    def publish_identity(
        self, walker_id: Optional[str], distance: float, confidence: float, *, embedding: Optional[np.ndarray] = None,
        personalized: bool = False, t_ns: Optional[int] = None, reason: str = "",
    ) -> bool:
        """``reason``: why no walker is followed (unknown, or camera and IMU disagree); "" when one is."""
        emb = None if embedding is None else np.array(embedding, dtype=np.float32, copy=True).reshape(-1)
        fields = dict(
            t_ns=M.now_ns() if t_ns is None else t_ns, walker_id=walker_id, personalized=personalized,
            distance=distance if distance is not None else math.nan, confidence=confidence, reason=reason,
            shape=(0,) if emb is None else emb.shape,
        )
        return self._enqueue(M.TOPIC_IDENTITY, fields, emb)

    def publish_status(
        self, status: str, reason: str = "", *, walker_id: Optional[str] = None, personalized: bool = False,
        phase: float = 0.0, cycle_s: float = 0.0, t_ns: Optional[int] = None, t_input_ns: int = 0,
        counters: Optional[dict] = None, inline: bool = False,
    ) -> bool:
        """Queue a status message; ``inline``: send it from the caller's thread now, so that it precedes a
        trajectory the caller sends next (a status leaving HOLD before the first trajectory it allows)."""
        if status not in M.STATUSES:
            raise ValueError(f"status must be one of {M.STATUSES}, got {status!r}")
        fields = dict(
            t_ns=M.now_ns() if t_ns is None else t_ns, t_input_ns=t_input_ns, status=status, reason=reason,
            walker_id=walker_id, personalized=personalized, phase=phase, cycle_s=cycle_s, counters=counters or {},
        )
        if inline:
            return self._send_inline(M.TOPIC_STATUS, fields, None)
        return self._enqueue(M.TOPIC_STATUS, fields, None)

    # -------------------------------------------------------------------------------------- thread
    def _open(self):
        import zmq

        if self._ctx is None:
            # A private context: its ZAP authenticator (inproc://zeromq.zap.01) cannot clash with
            # another publisher's, and stop() can terminate it.
            self._ctx = self._own_ctx = zmq.Context()
            if self.realtime_priority > 0 and hasattr(os, "SCHED_FIFO"):
                # Set before the first socket: libzmq starts its I/O thread with these.
                self._ctx.set(zmq.THREAD_SCHED_POLICY, os.SCHED_FIFO)
                self._ctx.set(zmq.THREAD_PRIORITY, self.realtime_priority)
        ctx = self._ctx
        sock = ctx.socket(zmq.PUB)
        try:
            self._configure(sock, ctx)
        except BaseException:
            sock.close(0)  # an open socket would make the context's term() wait forever
            raise
        return sock

    def _configure(self, sock, ctx) -> None:
        import zmq

        sock.setsockopt(zmq.SNDHWM, self.config.sndhwm)
        sock.setsockopt(zmq.LINGER, self.config.linger_ms)
        cfg = self.config
        if cfg.curve_server_secret_key is not None:
            public, secret = load_keypair(cfg.curve_server_secret_key)
            if secret is None:
                raise ValueError(f"{cfg.curve_server_secret_key}: holds no secret key (use the *.key_secret file)")
            allowed = None
            if cfg.curve_allowed_clients_dir is not None:
                allowed = Path(cfg.curve_allowed_clients_dir)
                if not allowed.is_dir():
                    raise FileNotFoundError(f"CURVE allowed clients folder {allowed} does not exist")
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(allowed) if allowed else zmq.auth.CURVE_ALLOW_ANY)
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
        for ep in cfg.endpoints:
            try:
                sock.bind(ep)
            except zmq.ZMQError as exc:
                raise OSError(f"cannot bind ZeroMQ endpoint {ep}: {exc}") from None
            self.bound_endpoints.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))

    def _run(self) -> None:
        try:
            sock = self._open()
        except BaseException as exc:  # reported to start() in the caller's thread
            self._start_error = exc
            self._stop_auth()
            self._ready.set()
            return
        with self._sock_lock:
            self._sock = sock
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    topic, seq, fields, payload = self._queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                self._send(topic, seq, fields, payload)
        finally:
            with self._sock_lock:
                self._sock = None
            sock.close(self.config.linger_ms)
            self._stop_auth()

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_ctx is not None:
            self._own_ctx.term()
            self._own_ctx = self._ctx = None
