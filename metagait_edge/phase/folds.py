"""The personalization experiment's subject-disjoint folds, reused for phase and mode estimation."""

from __future__ import annotations

from metagait_edge.data.hugadb import N_SUBJECTS
from metagait_edge.personalization.config import SplitConfig
from metagait_edge.personalization.tasks import subject_folds


def phase_folds(split: SplitConfig = SplitConfig()) -> list[dict]:
    """[{train, val, test}] over HuGaDB's 18 walkers; every walker is a test walker in exactly one fold."""
    return subject_folds(list(range(1, N_SUBJECTS + 1)), split.n_folds, split.n_val, split.seed)
