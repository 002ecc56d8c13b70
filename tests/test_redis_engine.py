"""The Redis engine's bookkeeping that needs no Redis (trio_stream/_engine/redis_engine.py);
the engine itself runs over a real Redis in test_engines.py and the test_cluster files."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trio_stream._engine.redis_engine import _Kept, _KeptChannels
from trio_stream._protocol.messages import CreateChannel

NAMES = st.sampled_from(["a", "b", "c"])


@given(st.lists(st.tuples(NAMES, st.booleans() | st.none()), max_size=30))
def test_the_kept_channels_count_those_made_with_keep_as_a_walk_would(
    steps: list[tuple[str, bool | None]],
) -> None:
    # The count is kept as they come and go (max_kept_channels is checked on each create):
    # a name set again (a take-over) or discarded twice must not count twice.
    kept = _KeptChannels()
    model: dict[str, _Kept] = {}
    for name, keep in steps:  # None: discarded; else set, made with keep or not
        if keep is None:
            kept.discard(name)
            model.pop(name, None)
        else:
            entry = _Kept("epoch", "holder", CreateChannel(id=1, channel=name, keep=keep))
            kept.set(name, entry)
            model[name] = entry
        assert dict(kept) == model and len(kept) == len(model)
        assert kept.made_to_keep == sum(k.request.keep for k in model.values())
