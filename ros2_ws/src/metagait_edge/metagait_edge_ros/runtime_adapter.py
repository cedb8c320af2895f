"""The one place where the nodes meet the metagait_edge runtime (no rclpy here).

What the nodes need from the library, as a small interface:

- :func:`open_imu_source` -- an IMU stream that calls ``on_frame(ImuFrame, host_monotonic_s)`` per
  sample: ``metagait_edge.runtime.serial_source.SerialSource`` for a port, a rosbag2 replay
  (``metagait_edge.ros.bag``) for ``bag:<folder>``, or the synthetic demo session.
- :class:`GaitRuntime` -- takes IMU frames, holds the current bounded reference, runs few-shot calibration
  (``metagait_edge.runtime.orchestrator.build_runtime``); :func:`trajectory_output` / :func:`hold_output`
  turn its reference (or its HOLD) into the ROS ``GaitTrajectory`` record: the one place where the
  runtime's status words become ROS status codes.
- :func:`load_recognizer` -- silhouettes to :class:`~metagait_edge.ros.msgs.IdentityOutput`
  (``metagait_edge.ros.recognition.build_recognizer``).
- :func:`open_zmq_output` -- the runtime's ZeroMQ publisher (``metagait_edge.runtime.zmq_output.ZmqPublisher``)
  for the same reference, in the runtime's own words.
"""

from __future__ import annotations

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

    def enroll(self, walker: str, silhouettes: np.ndarray, window: int) -> Any: ...  # runtime.enrollment.Enrollment


def load_runtime(params: GaitParams) -> GaitRuntime:
    """The library's runtime, started; ValueError naming the parameter when ``model_path`` is unusable."""
    if params.model_path and not os.path.exists(params.model_path):
        raise ValueError(f"model_path: {params.model_path!r} does not exist")
    if params.engine_path and not os.path.isdir(params.engine_path):
        raise ValueError(f"engine_path: {params.engine_path!r} is not a folder")
    from metagait_edge.runtime.orchestrator import build_runtime as build

    port = params.serial_port  # a replayed HuGaDB file: the phase estimate masks its corrupted gyroscopes
    try:
        return build(backend=params.backend, model_path=params.model_path or None,
                     engine_path=params.engine_path or None, calibration_dir=params.calibration_dir or None,
                     walker=params.walker or None, recording=port[len(HUGADB_PREFIX):] if port.startswith(HUGADB_PREFIX) else None)
    except (ImportError, ModuleNotFoundError) as exc:
        raise ValueError(f"backend: {params.backend!r} is not available here ({exc})") from exc


def load_recognizer(params: GaitParams) -> Recognizer:
    """The gallery file, or (no walker enrolled yet) its folder, must exist: the Enroll action writes the file.
    ``identity_threshold`` 0: the gallery's threshold, else the recognition model's calibrated one."""
    folder = os.path.dirname(os.path.abspath(params.gallery_path))
    if not os.path.isfile(params.gallery_path) and not os.path.isdir(folder):
        raise ValueError(f"gallery_path: {params.gallery_path!r} does not exist (nor its folder)")
    from metagait_edge.ros.recognition import build_recognizer

    return build_recognizer(gallery_path=params.gallery_path, threshold=params.identity_threshold or None,
                            create=True)


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


class ZmqTrajectoryOutput:
    """The runtime's ZeroMQ publisher (``metagait_edge.runtime.zmq_output.ZmqPublisher``) for the ROS graph."""

    def __init__(self, endpoint: str) -> None:
        from metagait_edge.runtime.zmq_output import ZmqOutputConfig, ZmqPublisher

        try:
            self.publisher = ZmqPublisher(ZmqOutputConfig(endpoints=[endpoint])).start()
        except Exception as exc:  # zmq.ZMQError (address in use, bad endpoint) and config errors
            raise ValueError(f"zmq_endpoint: cannot bind {endpoint!r}: {exc}") from exc

    def publish_reference(self, ref: Any) -> bool:
        """A runtime ``Reference`` as ``gait.trajectory``, with the runtime's own status and reason, and the
        time of the newest IMU sample it rests on (``t_input_ns``)."""
        from metagait_edge.runtime.input_gate import wall_ns

        now_ns = time.time_ns()
        return self.publisher.publish_trajectory(
            ref.trajectory, ref.channel_names, walker_id=ref.walker or None, personalized=ref.personalized,
            phase=ref.phase, cycle_s=ref.cycle_s, status=ref.status, reason=ref.reason, t_ns=now_ns,
            t_input_ns=wall_ns(ref.input_time_s, time.monotonic(), now_ns),
        )

    def publish_phase(self, estimate: Any, walker: str) -> bool:
        """One runtime ``PhaseEstimate`` as ``gait.phase`` (per IMU sample), ``t_input_ns`` = its sample's time."""
        from metagait_edge.runtime.input_gate import wall_ns

        return self.publisher.publish_phase(estimate, walker_id=walker or None,
                                            t_input_ns=wall_ns(estimate.t_s, time.monotonic(), time.time_ns()))

    def publish_hold(self, reason: str, walker: str) -> bool:
        # HOLD means "no valid reference": the protocol sends it as a status, never with trajectory values.
        return self.publisher.publish_status("HOLD", reason, walker_id=walker or None)

    def close(self) -> None:
        self.publisher.stop()


def open_zmq_output(endpoint: str) -> ZmqTrajectoryOutput:
    """The runtime's ZeroMQ trajectory publisher bound to ``endpoint`` (``publish(out)``, ``close()``)."""
    return ZmqTrajectoryOutput(endpoint)
