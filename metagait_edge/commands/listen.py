"""``metagait-edge listen``: the reference ZeroMQ subscriber (docs/zmq_protocol.md).

Connects to the runtime's PUB socket, validates every message against the schema, prints one line
per message and a summary (received per topic, invalid, sequence gaps, latency from the header's
``t_ns``). Exit status: 0 all valid, 1 an invalid message was received, 3 ``--count`` not reached
before ``--timeout``, 4 a ``--require``d topic had no valid message. ``--gen-keys DIR`` creates CURVE key pairs and exits.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

NAME = "listen"
HELP = "reference subscriber: print and validate the runtime's ZeroMQ messages (or --gen-keys DIR)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5556", help="PUB endpoint to connect to")
    parser.add_argument(
        "--topics", nargs="+", default=None, metavar="TOPIC",
        help="topics to subscribe to (default: gait.trajectory gait.identity gait.status gait.phase)",
    )
    parser.add_argument("--count", type=int, default=None, help="stop after this many messages")
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--server-key", metavar="FILE", help="server public key file: enables CURVE")
    parser.add_argument(
        "--client-keys", metavar="DIR", help="folder (or file) with this client's key pair (*.key_secret)"
    )
    parser.add_argument("--gen-keys", metavar="DIR", help="create server and client CURVE key pairs in DIR and exit")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument(
        "--require", nargs="+", default=(), metavar="TOPIC",
        help="exit 4 unless at least one valid message of each of these topics arrived (e.g. gait.trajectory)",
    )


@dataclass
class ListenSummary:
    received: dict = field(default_factory=dict)  # topic -> valid messages
    invalid: int = 0
    gaps: dict = field(default_factory=dict)  # topic -> number of seq jumps
    missing: dict = field(default_factory=dict)  # topic -> messages missing in those jumps
    latencies_ms: list = field(default_factory=list)
    input_ages_ms: list = field(default_factory=list)  # trajectories: receive time - t_input_ns (input freshness)
    errors: list = field(default_factory=list)  # first few validation errors
    elapsed_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.received.values())

    def lines(self) -> list[str]:
        out = [f"received {self.total} valid message(s) in {self.elapsed_s:.2f} s, {self.invalid} invalid"]
        for topic in sorted(set(self.received) | set(self.gaps)):
            out.append(
                f"  {topic}: {self.received.get(topic, 0)} received, {self.gaps.get(topic, 0)} seq gap(s), "
                f"{self.missing.get(topic, 0)} missing"
            )
        if self.latencies_ms:
            import numpy as np

            lat = np.asarray(self.latencies_ms)
            out.append(
                f"  latency ms (now - t_ns): mean {lat.mean():.3f}, p50 {np.median(lat):.3f}, "
                f"p99 {np.percentile(lat, 99):.3f}, max {lat.max():.3f}"
            )
        if self.input_ages_ms:
            import numpy as np

            age = np.asarray(self.input_ages_ms)
            out.append(f"  trajectory input age ms (now - t_input_ns): p50 {np.median(age):.3f}, "
                       f"p99 {np.percentile(age, 99):.3f}, max {age.max():.3f}")
        out += [f"  invalid: {e}" for e in self.errors]
        return out


def _client_keypair(path: str) -> tuple[bytes, bytes]:
    from pathlib import Path

    from metagait_edge.runtime.zmq_output import load_keypair

    p = Path(path)
    if p.is_dir():
        # The folder --gen-keys writes holds the server's secret key too: it is never a client's key pair.
        candidates = sorted(c for c in p.glob("*.key_secret") if c.name != "server.key_secret")
        if len(candidates) != 1:
            raise ValueError(f"--client-keys {p}: expected one client *.key_secret file (server.key_secret aside), "
                             f"found {len(candidates)}: {', '.join(c.name for c in candidates) or 'none'}")
        p = candidates[0]
    public, secret = load_keypair(p)
    if secret is None:
        raise ValueError(f"--client-keys {p}: holds no secret key (use the client's *.key_secret file)")
    return public, secret


def listen(
    endpoint: str,
    topics: Optional[Sequence[str]] = None,
    count: Optional[int] = None,
    timeout: Optional[float] = None,
    server_key: Optional[str] = None,
    client_keys: Optional[str] = None,
    out: Callable[[str], None] = print,
    context=None,
) -> ListenSummary:
    """Subscribe, validate and summarize; returns when ``count`` messages arrived or ``timeout`` passed."""
    import time

    import zmq

    from metagait_edge.runtime import zmq_schema as M
    from metagait_edge.runtime.zmq_output import load_keypair

    topic_list = [t.encode() for t in topics] if topics else list(M.TOPICS)
    for t in topic_list:
        if t not in M.TOPICS:
            raise ValueError(f"unknown topic {t.decode()!r}; topics are {', '.join(x.decode() for x in M.TOPICS)}")
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    summary = ListenSummary()
    last_seq: dict = {}
    try:
        if server_key:
            server_public, _ = load_keypair(server_key)
            if not client_keys:
                raise ValueError("--server-key needs --client-keys DIR (this client's key pair)")
            sock.curve_publickey, sock.curve_secretkey = _client_keypair(client_keys)
            sock.curve_serverkey = server_public
        elif client_keys:
            raise ValueError("--client-keys needs --server-key FILE (the server's public key)")
        for t in topic_list:
            sock.setsockopt(zmq.SUBSCRIBE, t)
        sock.connect(endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        while count is None or summary.total + summary.invalid < count:
            wait_ms = 200 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if deadline is not None and wait_ms == 0:
                break
            if not poller.poll(min(wait_ms, 200)):
                continue
            frames = sock.recv_multipart()
            recv_ns = time.time_ns()
            try:
                msg = M.decode(frames)
            except M.MessageError as exc:
                summary.invalid += 1
                if len(summary.errors) < 5:
                    summary.errors.append(str(exc))
                out(f"INVALID {exc}")
                continue
            topic = msg.topic.decode()
            h = msg.header
            summary.received[topic] = summary.received.get(topic, 0) + 1
            prev = last_seq.get(topic)
            if prev is not None and h["seq"] > prev + 1:
                summary.gaps[topic] = summary.gaps.get(topic, 0) + 1
                summary.missing[topic] = summary.missing.get(topic, 0) + h["seq"] - prev - 1
            last_seq[topic] = h["seq"]
            latency_ms = (recv_ns - h["t_ns"]) / 1e6
            summary.latencies_ms.append(latency_ms)
            if msg.topic == M.TOPIC_TRAJECTORY:
                summary.input_ages_ms.append((recv_ns - h["t_input_ns"]) / 1e6)
            out(
                f"{topic} seq={h['seq']} walker={h['walker_id']} personalized={h['personalized']} "
                f"status={h['status']} phase={h['phase']:.3f} shape={h['shape']} latency={latency_ms:.3f}ms"
                + (f" mode={h['mode']} phase_l={msg.payload[1]:.3f} rate={msg.payload[2]:.2f}/s "
                   f"confidence={h['confidence']:.2f} source={h['source']}" if msg.topic == M.TOPIC_PHASE else "")
                + (f" reason={h['reason']!r}" if h["reason"] else "")
            )
        summary.elapsed_s = time.monotonic() - start
    finally:
        sock.close(0)
    return summary


def run(args: argparse.Namespace) -> int:
    if args.gen_keys:
        from metagait_edge.runtime.zmq_output import generate_keys

        keys = generate_keys(args.gen_keys)
        print(f"server secret key (publisher's curve_server_secret_key): {keys['server_secret']}")
        print(f"server public key (subscribers' --server-key):         {keys['server_public']}")
        print(f"client key pair (subscribers' --client-keys):          {keys['client_secret']}")
        print(f"allowed clients folder (curve_allowed_clients_dir):    {keys['allowed_clients_dir']}")
        return 0
    printer = (lambda _line: None) if args.quiet else (lambda line: print(line, flush=True))
    summary = listen(args.endpoint, args.topics, args.count, args.timeout, args.server_key, args.client_keys, printer)
    for line in summary.lines():
        print(line)
    if summary.invalid:
        return 1
    if args.count is not None and summary.total < args.count:
        print(f"listen: only {summary.total} of {args.count} message(s) before the timeout", file=sys.stderr)
        return 3
    missing = [t for t in args.require if not summary.received.get(t)]
    if missing:  # e.g. a runtime that ran but never produced a trajectory is not a success
        print(f"listen: no valid message on {', '.join(missing)}", file=sys.stderr)
        return 4
    return 0
