"""``EdgeConfig``: the edge runtime's YAML configuration (sources, sinks, safety, calibration, models).

Loaded with ``metagait_edge.config.load_config(EdgeConfig, path)``: an unknown or mistyped key is an
error naming its dotted path. Example: ``deploy/edge.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from metagait_edge.runtime.phase_stream import PhaseStreamConfig
from metagait_edge.personalization.continual import ContinualConfig
from metagait_edge.runtime.camera_frontend import CameraConfig
from metagait_edge.runtime.safety import SafetyConfig
from metagait_edge.runtime.zmq_output import ZmqOutputConfig

SOURCE_KINDS = ("serial", "replay", "rosbag", "camera", "video", "frames")
IMU_KINDS = ("serial", "replay", "rosbag")
CAMERA_KINDS = ("camera", "video", "frames")


@dataclass
class SourceConfig:
    """One input. ``kind``: serial (``port``), replay (a HuGaDB .txt ``path``), rosbag (a bag folder
    ``path``), camera (a device ``index``), video (a video file ``path``) or frames (a folder of images)."""

    kind: str = "serial"
    port: str = "/dev/ttyACM0"
    baudrate: int = 115200
    format: str = "binary"
    path: Optional[Path] = None
    index: int = 0
    rate_hz: float = 58.8  # IMU sample rate (gait detection and filters run on it); camera: frame rate
    loop: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"kind must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if self.kind in ("replay", "rosbag", "video", "frames") and self.path is None:
            raise ValueError(f"a {self.kind} source needs a path")
        if self.format not in ("binary", "ascii"):
            raise ValueError(f"format must be binary or ascii, got {self.format!r}")
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {self.rate_hz}")


@dataclass
class RecordingSinkConfig:
    """Optional recording of every published message (msgpack lines) for later analysis."""

    path: Optional[Path] = None


@dataclass
class SinksConfig:
    zmq: ZmqOutputConfig = field(default_factory=ZmqOutputConfig)
    recording: RecordingSinkConfig = field(default_factory=RecordingSinkConfig)


@dataclass
class CalibrationConfig:
    shots: int = 5
    # Valid strides walked before collection starts, again after every rejected or missing cycle: the first
    # stride of a walk misses the walker's mean cycle by more than the population mean does
    # (docs/results/personalization_stride_information.md); the strides after it are typical.
    settle_strides: int = 1
    min_cycle_s: float = 0.6
    max_cycle_s: float = 1.8
    min_knee_rom_deg: float = 15.0  # amplitude check: a shuffle or standing still is no gait cycle
    min_gyro_peak_dps: float = 60.0
    max_cycle_distance: float = 2.5  # consistency: RMS distance (normalized units) to the median cycle
    max_gap_s: float = 0.1  # no-gap check: largest spacing between consecutive samples of a cycle
    timeout_s: float = 120.0
    min_improvement: float = 0.0  # relative: accept only if loss_after < loss_before * (1 - this)
    directory: Optional[Path] = None  # profile store; None: $METAGAIT_CACHE/walkers

    def __post_init__(self) -> None:
        if not 1 <= self.shots <= 50:
            raise ValueError(f"shots must be in 1..50, got {self.shots}")
        if not 0 <= self.settle_strides <= 20:
            raise ValueError(f"settle_strides must be in 0..20, got {self.settle_strides}")
        if not 0 < self.min_cycle_s < self.max_cycle_s:
            raise ValueError("need 0 < min_cycle_s < max_cycle_s")


@dataclass
class ModelsConfig:
    personalization: Optional[Path] = None  # fold/problem folder with maml/pooled checkpoints; None: shipped
    recognition: Optional[Path] = None  # MetaGait checkpoint; None: shipped (or a random tiny model)
    gallery: Optional[Path] = None  # enrolled walkers (safetensors); None: an empty gallery
    identity_threshold: Optional[float] = None  # None: the gallery file's threshold
    # Where per-cycle generation runs: auto (TensorRT, else ONNX Runtime, else torch), torch, onnxruntime,
    # tensorrt. Calibration always adapts in torch; only the control path's generation moves.
    backend: str = "auto"
    onnx: Optional[Path] = None  # exported personalization model; None: exported once into the cache
    engine_cache: Optional[Path] = None  # TensorRT engines; None: next to the ONNX file
    precision: str = "fp16"  # TensorRT: fp32 | fp16

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "torch", "onnxruntime", "tensorrt"):
            raise ValueError(f"models.backend must be auto, torch, onnxruntime or tensorrt, got {self.backend!r}")
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"models.precision must be fp32 or fp16, got {self.precision!r}")


@dataclass
class RuntimeConfig:
    walker: str = ""  # declared walker (no camera): use this walker's profile with confidence 1
    recognition_every: int = 15  # camera frames between identity queries
    recognition_window: int = 30  # silhouettes per identity query
    status_period_s: float = 1.0
    history_s: float = 6.0  # IMU history kept by the gait worker
    # CPython hands the GIL to a waiting thread only every switch interval (5 ms by default): a camera or
    # recognition thread could then delay the control path by 5 ms per hand-over. Process-wide; 0 keeps it.
    gil_switch_interval_ms: float = 0.5
    # Linux nice value of the camera/recognition thread. 0 by default: a deprioritized thread that holds the
    # GIL when preempted delays the control threads (priority inversion; measured p99 16 ms at 10 vs 11 ms at 0).
    camera_nice: int = 0
    # After start-up, move every object into the collector's permanent generation (gc.freeze): a full
    # collection over the ~177k objects of torch + models stalls all threads for ~90 ms otherwise.
    freeze_gc: bool = True
    # SCHED_FIFO priority (1-98) of the control-path threads: serial reader, gait worker, watchdog, ZeroMQ
    # publisher (camera stays normal). 0: normal scheduling. Needs CAP_SYS_NICE or LimitRTPRIO (systemd).
    realtime_priority: int = 0

    def __post_init__(self) -> None:
        if self.recognition_every < 1 or self.recognition_window < 2:
            raise ValueError("recognition_every must be >= 1 and recognition_window >= 2")
        if not 0 <= self.realtime_priority <= 98:
            raise ValueError(f"realtime_priority must be in [0, 98] (0: off), got {self.realtime_priority}")
        if not 0 <= self.camera_nice <= 19:
            raise ValueError(f"camera_nice must be in [0, 19], got {self.camera_nice}")
        if not 0 <= self.gil_switch_interval_ms <= 100:
            raise ValueError(f"gil_switch_interval_ms must be in [0, 100], got {self.gil_switch_interval_ms}")


@dataclass
class IdentityConfig:
    """Camera and IMU identities, fused (``runtime.identity``; docs/runtime.md): a personalized model runs only
    when the evidence agrees; a conflict is counted, reported and falls back to the generic model."""

    imu: bool = True  # identify the wearer from their strides (calibration enrolls them)
    imu_model: Optional[Path] = None  # IMU identity model (safetensors); None: the shipped one
    imu_strides: int = 5  # strides per IMU identification (the most recent ones)
    imu_threshold: Optional[float] = None  # z-score acceptance threshold; None: the model's
    single_source: bool = True  # one source alone (the other silent) may select a walker when it accepts one
    # An answer older than this no longer counts (0: never expires). The camera answers every
    # runtime.recognition_every frames while the walker is in view, the IMU at every walking stride, so only a
    # source that has gone silent expires: the walker left the view, or nobody has walked for this long.
    evidence_max_age_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.imu_strides <= 5:
            raise ValueError(f"identity.imu_strides must be in 1..5, got {self.imu_strides}")
        if not self.evidence_max_age_s >= 0:
            raise ValueError(f"identity.evidence_max_age_s must be >= 0 seconds (0: never), got {self.evidence_max_age_s}")


@dataclass
class EdgeConfig:
    sources: List[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    sinks: SinksConfig = field(default_factory=SinksConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)  # runtime/continual.py
    phase: PhaseStreamConfig = field(default_factory=PhaseStreamConfig)  # gait.phase and the per-mode reference
    camera: CameraConfig = field(default_factory=CameraConfig)  # front end of the camera source

    def __post_init__(self) -> None:
        imu = [s for s in self.sources if s.kind in IMU_KINDS]
        cams = [s for s in self.sources if s.kind in CAMERA_KINDS]
        if len(imu) > 1 or len(cams) > 1:
            raise ValueError(f"at most one IMU source and one camera source, got {len(imu)} and {len(cams)}")

    @property
    def imu_source(self) -> Optional[SourceConfig]:
        return next((s for s in self.sources if s.kind in IMU_KINDS), None)

    @property
    def camera_source(self) -> Optional[SourceConfig]:
        return next((s for s in self.sources if s.kind in CAMERA_KINDS), None)
