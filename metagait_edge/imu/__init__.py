"""The IMU domain: the serial wire format, HuGaDB text recordings as a stream, synthetic IMU, replay.

- :mod:`metagait_edge.imu.protocol`: binary frames and HuGaDB ASCII rows (docs/imu_protocol.md);
- :mod:`metagait_edge.imu.synthetic`: a plausible walking pattern as raw counts, when there is no data;
- :mod:`metagait_edge.imu.replay`: recorded samples back into a stream, in real time (serial writer,
  runtime input).

Nothing here imports the runtime, ROS or the CLI; they import this package.
"""

from __future__ import annotations
