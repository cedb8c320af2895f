"""Thin entry point for MetaGait recognition training (also under torchrun).

    python training/train_recognition.py --config training/configs/recognition_synthetic_cpu.yaml
    torchrun --nproc_per_node 2 training/train_recognition.py --config training/configs/recognition_casia_b.yaml
"""

from __future__ import annotations

import sys

from metagait_edge.recognition.train import main

if __name__ == "__main__":
    sys.exit(main())
