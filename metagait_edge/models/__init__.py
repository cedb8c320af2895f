"""Neural network models (imports torch). The TCN's public names are re-exported here; MetaGait lives in
``metagait_edge.models.metagait``."""

from __future__ import annotations

from metagait_edge.models import tcn as _tcn
from metagait_edge.models.tcn import *  # noqa: F401,F403

__all__ = list(_tcn.__all__)
