"""Gait phase and locomotion mode per IMU sample (issue 17): offline ground truth, the causal baseline,
a learned causal estimator, and their evaluation on held-out HuGaDB walkers.

Domain layer: imports ``data``, ``models``, ``metrics`` and the shared modules, never ``runtime``, ``ros``
or ``commands``.
"""
