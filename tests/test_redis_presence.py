"""redis_presence.NodeLog: what a node says of the others joining and leaving (no Redis
needed: it is fed the live nodes of each heartbeat, and the time)."""

from __future__ import annotations

import logging

import pytest

from trio_stream._engine.redis_presence import NodeLog

TTL_S = 3.0


def said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    caplog.clear()
    return lines


def test_a_node_missing_for_a_ttl_has_left_and_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_stream._engine.redis_presence")
    log = NodeLog("a", TTL_S)
    log.saw(frozenset({"a", "b", "c"}), 0.0)
    assert said(caplog) == [("INFO", "nodes in the cluster besides this one: b, c")]
    log.saw(frozenset({"a", "b"}), 1.0)  # c missing: not yet gone (a Redis restarted empty)
    log.saw(frozenset({"a", "b"}), 3.9)
    assert said(caplog) == []
    log.saw(frozenset({"a", "b"}), 4.0)
    log.saw(frozenset({"a", "b"}), 9.0)
    (line,) = said(caplog)
    assert line[0] == "WARNING"
    assert line[1].startswith("node 'c' left the cluster: no heartbeat from it for over 6 s")
    log.saw(frozenset({"a", "b", "c"}), 10.0)
    assert said(caplog) == [("INFO", "node 'c' is back in the cluster")]


def test_a_node_back_within_a_ttl_is_not_said_to_have_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_stream._engine.redis_presence")
    log = NodeLog("a", TTL_S)
    log.saw(frozenset({"a"}), 0.0)
    assert said(caplog) == []  # alone: nothing to say
    log.saw(frozenset({"a", "b"}), 1.0)
    assert said(caplog) == [("INFO", "node 'b' joined the cluster")]
    log.saw(frozenset({"a"}), 2.0)
    log.saw(frozenset({"a", "b"}), 4.5)  # missing 2.5 s: a Redis restart, not a departure
    log.saw(frozenset({"a"}), 5.0)
    log.saw(frozenset({"a"}), 7.9)
    assert said(caplog) == []
