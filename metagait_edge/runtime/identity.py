"""Which walker's profile to run, from a stream of identity answers (camera recognition, or any other source)."""

from __future__ import annotations

from typing import Optional


class IdentityVote:
    """Hysteresis over identity answers: switch to a walker only when two consecutive answers agree (one odd
    window must not flip the personalized model); an unknown walker (None: rejected by the gallery) drops to
    the generic model at once."""

    def __init__(self) -> None:
        self._votes: list[Optional[str]] = []

    def decide(self, walker_id: Optional[str], current: Optional[str]) -> tuple[bool, Optional[str]]:
        """(switch?, walker to run) after one more answer, given the walker running now."""
        self._votes = (self._votes + [walker_id])[-2:]
        if walker_id is None:
            return True, None
        if walker_id == current or (len(self._votes) == 2 and self._votes[0] == self._votes[1]):
            return True, walker_id
        return False, current
