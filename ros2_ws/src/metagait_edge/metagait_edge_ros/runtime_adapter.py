"""The one place where the nodes meet the metagait_edge runtime (no rclpy here).

What the nodes need from the library, as a small interface:

- :func:`open_imu_source` -- an IMU stream that calls ``on_frame(ImuFrame, host_monotonic_s)`` per
  sample: ``metagait_edge.runtime.serial_source.SerialSource`` for a port, a rosbag2 replay
  (``metagait_edge.ros.bag``) for ``bag:<folder>``, or the synthetic demo session.
- :class:`GaitRuntime` -- takes IMU frames, yields bounded trajectories, runs few-shot calibration. It is
  built by the runtime orchestrator (``metagait_edge.runtime.orchestrator.build_runtime``); until that
  module exists in the installed library :func:`load_runtime` raises a clear error naming it.
- :func:`load_recognizer` -- silhouettes to :class:`~metagait_edge.ros.msgs.IdentityOutput`, likewise
  from the library's gallery (``metagait_edge.ros.recognition.build_recognizer``).
- :func:`open_zmq_output` -- the runtime's ZeroMQ publisher (``metagait_edge.runtime.zmq_output.ZmqPublisher``).
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any, Callable, Protocol

import numpy as np

from metagait_edge.imu.replay import PacedThread
from metagait_edge.ros import msgs
from metagait_edge_ros.params import BAG_PREFIX, HUGADB_PREFIX, SYNTHETIC_PORT, GaitParams

FrameCallback = Callable[[Any, float], None]


class ImuSource(Protocol):
    def start(self) -> Any: ...

    def stop(self, timeout: float = 2.0) -> None: ...


class _ReplaySource(PacedThread):
    """Plays runtime ImuFrames at ``rate_hz`` on a thread, in a loop (bag replay and synthetic demo).

    The library's one replay loop (``metagait_edge.imu.replay.PacedThread``), calling
    ``on_frame(frame, host_monotonic_s)``.
    """

    def __init__(self, frames: list, rate_hz: float, on_frame: FrameCallback, name: str) -> None:
        if not frames:
            raise ValueError(f"IMU source {name}: no frames to play")
        self.frames, self.on_frame, self.name = frames, on_frame, name
        super().__init__(self._play, len(frames), rate_hz, thread_name=f"imu-replay:{name}", loop=True)

    def _play(self, k: int) -> None:
        self.on_frame(self.frames[k % len(self.frames)], time.monotonic())


def _check_serial_port(port: str) -> None:
    """A device path must exist at configure time; pyserial URLs (``socket://``, ``rfc2217://``, ...) pass."""
    if "://" in port:
        return
    if not port:
        raise ValueError("serial_port: empty (use 'synthetic', 'hugadb:<file>', 'bag:<folder>' or a device)")
    if not os.path.exists(port):
        raise ValueError(f"serial_port: {port!r} does not exist (is the IMU board plugged in?)")


def open_imu_source(params: GaitParams, on_frame: FrameCallback) -> ImuSource:
    """The IMU stream selected by ``serial_port`` (not started); ValueError naming the parameter if unusable."""
    port = params.serial_port
    if port == SYNTHETIC_PORT:
        from metagait_edge.imu.protocol import ImuFrame
        from metagait_edge.ros.bag import synthetic_session

        rows = synthetic_session(int(params.imu_rate_hz * 20), rate_hz=params.imu_rate_hz)["rows"]
        frames = [ImuFrame(seq=i, t_us=None, raw=r) for i, r in enumerate(rows)]
        return _ReplaySource(frames, params.imu_rate_hz, on_frame, "synthetic")
    if port.startswith(HUGADB_PREFIX):
        from metagait_edge.imu.protocol import ImuFrame
        from metagait_edge.ros.bag import read_hugadb_rows, resolve_hugadb_file

        try:
            rows = read_hugadb_rows(resolve_hugadb_file(port[len(HUGADB_PREFIX):])).rows
        except (OSError, ValueError) as exc:
            raise ValueError(f"serial_port: {port!r}: {exc}") from exc
        frames = [ImuFrame(seq=i, t_us=None, raw=r) for i, r in enumerate(rows)]
        return _ReplaySource(frames, params.imu_rate_hz, on_frame, port)
    if port.startswith(BAG_PREFIX):
        from metagait_edge.ros.bag import BagReader

        folder = port[len(BAG_PREFIX):]
        if not os.path.isdir(folder):
            raise ValueError(f"serial_port: bag folder {folder!r} does not exist")
        with BagReader(folder) as reader:
            frames = list(reader.imu_frames(strict=False))
        return _ReplaySource(frames, params.imu_rate_hz, on_frame, port)
    from metagait_edge.runtime.serial_source import SerialSource, SerialSourceConfig

    _check_serial_port(port)
    config = SerialSourceConfig(port=port, baudrate=params.baud_rate, format=params.imu_format)
    return SerialSource(config, on_frame=on_frame)


class GaitRuntime(Protocol):
    """What the nodes use of ``metagait_edge.runtime.orchestrator.Runtime``."""

    channel_names: list[str]
    reference_listeners: list[Callable[[], None]]

    def push_imu(self, raw: np.ndarray, host_time_s: float) -> None: ...

    def reference(self) -> Any: ...  # metagait_edge.runtime.reference.Reference | None

    def use_walker(self, walker: str | None, confidence: float = 1.0) -> bool: ...

    def calibrate(self, walker: str, shots: int, feedback: Callable[[int, int], None],
                  cancelled: Callable[[], bool], timeout_s: float) -> Any: ...

    def stop(self) -> None: ...


class Recognizer(Protocol):
    def identify(self, silhouettes: np.ndarray, stamp_ns: int) -> msgs.IdentityOutput: ...


def _library_attr(module: str, attr: str, what: str) -> Any:
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            f"{what} needs {module}.{attr}, which the installed metagait_edge library does not provide "
            f"({exc}); install the metagait_edge library of this checkout (pip install -e .)"
        ) from exc


def load_runtime(params: GaitParams) -> GaitRuntime:
    """The library's runtime, started; ValueError naming the parameter when ``model_path`` is unusable."""
    if params.model_path and not os.path.exists(params.model_path):
        raise ValueError(f"model_path: {params.model_path!r} does not exist")
    if params.engine_path and not os.path.isdir(params.engine_path):
        raise ValueError(f"engine_path: {params.engine_path!r} is not a folder")
    build = _library_attr("metagait_edge.runtime.orchestrator", "build_runtime", "the gait runtime")
    try:
        return build(backend=params.backend, model_path=params.model_path or None,
                     engine_path=params.engine_path or None, calibration_dir=params.calibration_dir or None,
                     walker=params.walker or None)
    except (ImportError, ModuleNotFoundError) as exc:
        raise ValueError(f"backend: {params.backend!r} is not available here ({exc})") from exc


def load_recognizer(params: GaitParams) -> Recognizer:
    if not os.path.isfile(params.gallery_path):
        raise ValueError(f"gallery_path: {params.gallery_path!r} does not exist")
    build = _library_attr("metagait_edge.ros.recognition", "build_recognizer", "walker identification")
    return build(gallery_path=params.gallery_path, threshold=params.identity_threshold)


def trajectory_output(ref: Any, stamp_ns: int, frame_id: str) -> msgs.TrajectoryOutput:
    """A runtime ``Reference`` as the ROS ``GaitTrajectory`` record, stamped at its newest IMU sample."""
    if ref.status == "OK":
        status = msgs.STATUS_CLAMPED if ref.clamped else msgs.STATUS_OK
    else:
        status = msgs.STATUS_FALLBACK
    return msgs.TrajectoryOutput(ref.trajectory, ref.channel_names, stamp_ns, ref.walker, ref.personalized,
                                 ref.phase, ref.cycle_s, status, frame_id)


def hold_output(channel_names: list[str], stamp_ns: int, walker: str, frame_id: str) -> msgs.TrajectoryOutput:
    """STATUS_STALE with no samples: the runtime is in HOLD, there is nothing a controller may track."""
    return msgs.TrajectoryOutput(np.zeros((len(channel_names), 0), np.float32), channel_names, stamp_ns, walker,
                                 False, 0.0, 0.0, msgs.STATUS_STALE, frame_id)


# GaitTrajectory.status -> the runtime's ZeroMQ status words (metagait_edge.runtime.messages.STATUSES).
ZMQ_STATUS = {msgs.STATUS_OK: "OK", msgs.STATUS_CLAMPED: "DEGRADED", msgs.STATUS_FALLBACK: "DEGRADED",
              msgs.STATUS_STALE: "HOLD"}
ZMQ_REASON = {msgs.STATUS_CLAMPED: "clamped", msgs.STATUS_FALLBACK: "fallback", msgs.STATUS_STALE: "stale input"}


class ZmqTrajectoryOutput:
    """The runtime's ZeroMQ publisher (``metagait_edge.runtime.zmq_output.ZmqPublisher``) for ROS outputs."""

    def __init__(self, endpoint: str) -> None:
        from metagait_edge.runtime.zmq_output import ZmqOutputConfig, ZmqPublisher

        try:
            self.publisher = ZmqPublisher(ZmqOutputConfig(endpoints=[endpoint])).start()
        except Exception as exc:  # zmq.ZMQError (address in use, bad endpoint) and config errors
            raise ValueError(f"zmq_endpoint: cannot bind {endpoint!r}: {exc}") from exc

    def publish(self, out: msgs.TrajectoryOutput, reason: str = "") -> bool:
        if ZMQ_STATUS[out.status] == "HOLD":
            # HOLD means "no valid reference": the protocol sends it as a status, never with trajectory values.
            return self.publisher.publish_status("HOLD", reason or ZMQ_REASON[out.status],
                                                 walker_id=out.walker_id or None)
        return self.publisher.publish_trajectory(
            out.trajectory, out.channel_names, walker_id=out.walker_id or None, personalized=out.personalized,
            phase=out.phase, cycle_s=out.cycle_duration, status=ZMQ_STATUS[out.status],
            reason=reason or ZMQ_REASON.get(out.status, ""),
        )

    def close(self) -> None:
        self.publisher.stop()


def open_zmq_output(endpoint: str) -> ZmqTrajectoryOutput:
    """The runtime's ZeroMQ trajectory publisher bound to ``endpoint`` (``publish(out)``, ``close()``)."""
    return ZmqTrajectoryOutput(endpoint)
