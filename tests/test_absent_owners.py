"""The deletions kept for owners that were away (absent_owners.py), against a model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trio_stream._server.absent_owners import AbsentOwners

OWNERS = st.sampled_from(["a", "b", "c"])
CHANNELS = st.sampled_from(["x", "y", "z", "w"])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("note"), OWNERS, CHANNELS, st.sampled_from(["r1", "r2"])),
        st.tuples(st.just("made_again"), OWNERS, CHANNELS),
        st.tuples(st.just("take"), OWNERS),
    ),
    max_size=40,
)


@given(steps=STEPS, limit=st.integers(1, 5))
def test_the_book_gives_each_owner_the_newest_notices_of_its_deleted_channels(
    steps: list[tuple[str, ...]], limit: int
) -> None:
    # The model: one notice per channel name (the newest), oldest first; a channel made
    # again by its noted owner drops it, by anyone else leaves it; past the limit the oldest go.
    book = AbsentOwners(limit)
    model: dict[str, tuple[str, str]] = {}
    for step in steps:
        if step[0] == "note":
            _, owner, channel, reason = step
            model.pop(channel, None)
            model[channel] = (owner, reason)
            while len(model) > limit:
                del model[next(iter(model))]
            book.note(owner, channel, reason)
        elif step[0] == "made_again":
            _, owner, channel = step
            if model.get(channel, ("",))[0] == owner:
                del model[channel]
            book.made_again(channel, owner)
        else:
            owner = step[1]
            expected = {c: reason for c, (o, reason) in model.items() if o == owner}
            for channel in expected:
                del model[channel]
            assert book.take(owner) == expected
        assert len(book) == len(model) <= limit
    for owner in ("a", "b", "c"):
        assert book.take(owner) == {c: r for c, (o, r) in model.items() if o == owner}
    assert len(book) == 0 and not book._by_owner


def test_a_notice_is_given_once() -> None:
    book = AbsentOwners()
    book.note("daq", "temperature", "channel 'temperature' was deleted by admin")
    assert book.take("daq") == {"temperature": "channel 'temperature' was deleted by admin"}
    assert book.take("daq") == {}
