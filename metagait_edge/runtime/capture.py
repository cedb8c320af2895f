"""The receiving end of the ZeroMQ output in its own process, as a controller would run it: every message
is decoded and validated (``runtime.zmq_schema``) and the trajectories are saved with their receive times.
The demo and the end-to-end benchmark measure the pipeline with it.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np

from metagait_edge.runtime import zmq_schema as M


def capture_messages(endpoint: str, out_path: str, ready, stop, realtime_priority: int = 0) -> None:
    """Run in another process: receive and validate every message until ``stop``, save trajectories + receive times.

    ``out_path`` (npz): ``t_ns``, ``recv_ns``, ``traj`` [N, 6, 101], ``personalized``, ``invalid`` (undecodable
    messages), ``identities``, ``statuses``, ``phase`` [M, 5] (gait.phase payloads), ``phase_input_ns``,
    ``phase_status``. ``realtime_priority`` > 0: SCHED_FIFO, as an exoskeleton
    controller process runs.
    """
    import zmq

    if realtime_priority > 0:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime_priority))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVHWM, 10000)
    sock.connect(endpoint)
    ready.set()
    t_ns, recv_ns, trajs, pers, invalid, identities, statuses = [], [], [], [], 0, [], []
    phases, phase_input_ns, phase_status = [], [], []
    deadline = None
    while True:
        if stop.is_set() and deadline is None:
            deadline = time.monotonic() + 0.5  # drain what is in flight
        if deadline is not None and time.monotonic() > deadline:
            break
        if not sock.poll(50):
            continue
        frames = sock.recv_multipart()
        now = time.time_ns()
        try:
            msg = M.decode(frames)
        except M.MessageError:
            invalid += 1
            continue
        if msg.topic == M.TOPIC_TRAJECTORY:
            t_ns.append(msg.header["t_ns"])
            recv_ns.append(now)
            trajs.append(msg.payload)
            pers.append(msg.header["personalized"])
        elif msg.topic == M.TOPIC_IDENTITY:
            identities.append(str(msg.header["walker_id"]))
        elif msg.topic == M.TOPIC_PHASE:
            phases.append(msg.payload)
            phase_input_ns.append(msg.header["t_input_ns"])
            phase_status.append(msg.header["status"])
        else:
            statuses.append(msg.header["status"])
    sock.close(0)
    ctx.term()
    np.savez(out_path, t_ns=np.asarray(t_ns, np.int64), recv_ns=np.asarray(recv_ns, np.int64),
             traj=np.asarray(trajs, np.float32).reshape(len(trajs), 6, 101), personalized=np.asarray(pers, bool),
             invalid=invalid, identities=np.asarray(identities), statuses=np.asarray(statuses),
             phase=np.asarray(phases, np.float32).reshape(len(phases), len(M.PHASE_CHANNELS)),
             phase_input_ns=np.asarray(phase_input_ns, np.int64), phase_status=np.asarray(phase_status))


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
