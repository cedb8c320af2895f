"""MetaGait recognition: training (``train``), evaluation and ablation (``evaluate``), configs and data.

Heavy modules (torch) are imported by the submodules, not here, so ``import metagait_edge.recognition``
stays light.
"""

from __future__ import annotations

SHIPPED_VARIANTS = ("baseline", "mta", "mtp", "metagait")


def shipped_checkpoint_dir():
    """Folder of the shipped recognition checkpoints (``<variant>.safetensors`` + ``.json``)."""
    from metagait_edge.resources import RECOGNITION_CHECKPOINTS

    return RECOGNITION_CHECKPOINTS
