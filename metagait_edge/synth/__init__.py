"""Synthetic gait silhouettes: an articulated 3-D walker rendered from CASIA-B's views.

Import the submodules (``body``, ``render``, ``dataset``); this package imports nothing heavy.
"""

from __future__ import annotations
