"""Edge runtime streaming core: ring buffers, serial IMU input, the safety envelope, ZeroMQ output.

Submodules are imported on demand (``metagait_edge.runtime.ringbuffer`` etc.) so that importing the
package pulls in neither pyserial nor pyzmq.
"""

from __future__ import annotations
