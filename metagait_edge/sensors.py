"""The six body-worn IMUs, as every part of metagait-edge names and scales them.

HuGaDB's files, the serial wire format (docs/imu_protocol.md) and the ROS frame ids share one layout:
right foot, shin, thigh, then left foot, shin, thigh; per IMU acc x y z then gyro x y z, as int16 counts
of an accelerometer at +-2 g and a gyroscope at +-2000 deg/s. Nothing else lives here, and nothing is
imported, so any layer may use it.
"""

from __future__ import annotations

SENSORS: tuple[str, ...] = ("rf", "rs", "rt", "lf", "ls", "lt")
SENSOR_NAMES = {
    "rf": "right foot", "rs": "right shin", "rt": "right thigh",
    "lf": "left foot", "ls": "left shin", "lt": "left thigh",
}
AXES = ("x", "y", "z")
IMU_CHANNELS = tuple(f"{kind}_{s}_{a}" for s in SENSORS for kind in ("acc", "gyro") for a in AXES)  # 36
ACC_LSB_PER_G = 16384.0
GYRO_LSB_PER_DPS = 16.4
HUGADB_RATE_HZ = 58.8  # HuGaDB rows carry no timestamps; the dataset's sample counts give ~58.8 Hz
