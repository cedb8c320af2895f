"""IdentityVote: which walker's profile runs, from a stream of identity answers."""

from metagait_edge.runtime.identity import IdentityVote


def test_a_new_walker_needs_two_agreeing_answers_and_unknown_drops_at_once():
    vote = IdentityVote()
    assert vote.decide("ana", None) == (False, None)  # one answer is not enough
    assert vote.decide("ana", None) == (True, "ana")
    assert vote.decide("bob", "ana") == (False, "ana")  # one odd window does not flip the profile
    assert vote.decide("ana", "ana") == (True, "ana")
    assert vote.decide(None, "ana") == (True, None)  # unknown: the generic model at once
    assert vote.decide("bob", None) == (False, None)
    assert vote.decide("bob", None) == (True, "bob")
