"""HuGaDB data layer: archive, reader, gyroscope validity, segments, gait events, cycles, angles, normalization.

Entry points most callers need::

    from metagait_edge.data import build_cycle_set, CycleSetConfig, fit_normalizer
    cs = build_cycle_set(CycleSetConfig())      # verify + extract once, parse, segment, cache
    train = cs.select(np.isin(cs.subject, [1, 3, 5]))

Only numpy is imported here; scipy and tqdm load when a function needs them.
"""

from __future__ import annotations

from metagait_edge.data.archive import ArchiveError, PreparedArchive, fetch_hugadb, prepare_hugadb
from metagait_edge.data.cycles import CycleSet, CycleSetConfig, build_cycle_set, cycles_from_recording
from metagait_edge.data.gait_events import CausalGaitDetector, GaitEvent, GaitEventConfig, detect_leg_events
from metagait_edge.data.gyro_validity import channel_valid, corrupted_gyros, gyro_valid
from metagait_edge.data.hugadb import (
    ACTIVITIES, IMU_CHANNELS, HuGaDB, HuGaDBConfig, HuGaDBFormatError, Recording, parse_file,
)
from metagait_edge.data.joint_angles import ANGLE_CHANNELS, JointAngleConfig, joint_angles
from metagait_edge.data.normalization import ChannelNormalizer, fit_normalizer
from metagait_edge.data.segments import CONDITIONS, NoSegmentsError, Segment, SegmentConfig, find_segments
from metagait_edge.paths import DataNotFoundError

__all__ = [
    "ACTIVITIES", "ANGLE_CHANNELS", "ArchiveError", "CONDITIONS", "CausalGaitDetector", "ChannelNormalizer",
    "CycleSet", "CycleSetConfig", "DataNotFoundError", "GaitEvent", "GaitEventConfig", "HuGaDB", "HuGaDBConfig",
    "HuGaDBFormatError", "IMU_CHANNELS", "JointAngleConfig", "NoSegmentsError", "PreparedArchive", "Recording",
    "Segment", "SegmentConfig", "build_cycle_set", "channel_valid", "corrupted_gyros", "cycles_from_recording",
    "detect_leg_events", "fetch_hugadb", "find_segments", "fit_normalizer", "gyro_valid", "joint_angles",
    "parse_file", "prepare_hugadb",
]
