"""RetryLog: one warning per outage of Redis and one when the job works again."""

from __future__ import annotations

import logging

import pytest

from trio_stream._engine.retry_log import RetryLog, RetryLogGroup


def test_an_outage_is_one_warning_and_its_end_another(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.retry_log")
    log = RetryLog(logger, "the job")
    with caplog.at_level(logging.WARNING, logger="test.retry_log"):
        log.succeeded()  # nothing failed: nothing to say
        for attempt in range(100):
            log.failed(ConnectionError(f"refused {attempt}"))
        log.succeeded()
        log.succeeded()
        log.failed(ConnectionError("again"))
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "the job failed (refused 0): retrying until Redis answers"
    assert messages[1].startswith("the job works again, after ")
    assert messages[1].endswith(" s and 100 failed tries")
    assert messages[2] == "the job failed (again): retrying until Redis answers"
    assert len(messages) == 3


def test_an_outage_whose_work_went_away_is_forgotten_without_a_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The job had nothing left to try before Redis came back: no "works again" it did not
    # see, and the next outage is its own, with its own count.
    logger = logging.getLogger("test.retry_log")
    log = RetryLog(logger, "the job")
    with caplog.at_level(logging.WARNING, logger="test.retry_log"):
        log.failed(ConnectionError("first"))
        log.failed(ConnectionError("first, again"))
        log.forget()
        log.succeeded()  # says nothing: no outage is open
        log.failed(ConnectionError("second"))
        log.succeeded()
    messages = [record.getMessage() for record in caplog.records]
    assert messages[:2] == [
        "the job failed (first): retrying until Redis answers",
        "the job failed (second): retrying until Redis answers",
    ]
    assert messages[2].endswith(" s and 1 failed tries") and len(messages) == 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def appends_log() -> tuple[FakeClock, RetryLogGroup]:
    """A node's appenders' log (as RedisEngine makes it), on a clock the test moves."""
    clock = FakeClock()
    logger = logging.getLogger("test.retry_log")
    return clock, RetryLogGroup(logger, "appending to Redis", "writers", clock=clock)


def test_a_group_of_jobs_says_an_outage_once_and_its_end_once_the_first_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A node with 31 channels wrote two lines per channel for one Redis outage (an operator).
    clock, group = appends_log()
    jobs = [group.job(f"channel 'm/{i}'") for i in range(31)]
    with caplog.at_level(logging.WARNING, logger="test.retry_log"):
        for _ in range(3):
            for job in jobs:
                job.failed(ConnectionError("refused"))
        clock.now += 2.5
        jobs[5].succeeded()  # Redis answers: the outage is over for every writer
        assert len(caplog.records) == 2
        jobs[0].failed(ConnectionError("a try under way"))  # within the grace: unsaid
        for job in jobs:
            job.succeeded()  # the others' retries: nothing more to say
        jobs[1].failed(ConnectionError("again"))
        jobs[1].forget()  # its writer went away: the outage ends unsaid
        jobs[2].failed(ConnectionError("third"))
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == (
        "appending to Redis failed for channel 'm/0' (refused): retrying until Redis answers "
        "(the other writers that fail meanwhile are counted when it works again)"
    )
    assert messages[1] == (
        "appending to Redis works again, after 2.5 s (31 writers waited, 93 failed tries)"
    )
    assert messages[2].startswith("appending to Redis failed for channel 'm/1' (again)")
    assert messages[3].startswith("appending to Redis failed for channel 'm/2' (third)")
    assert len(messages) == 4


def test_a_job_that_keeps_failing_after_the_others_work_is_said_on_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One channel's append that kept failing held the group's "works again" back for every
    # writer (a review): its failure is its own, said by name once, and when it ends.
    clock, group = appends_log()
    stuck, other = group.job("channel 'big'"), group.job("channel 'm'")
    with caplog.at_level(logging.WARNING, logger="test.retry_log"):
        stuck.failed(ConnectionError("refused"))
        other.failed(ConnectionError("refused"))
        clock.now += 1.0
        other.succeeded()
        for _ in range(20):  # a try every 50 ms for a second: still within the grace
            stuck.failed(ValueError("too large"))
            clock.now += 0.049
        assert len(caplog.records) == 2
        clock.now += 0.1
        for _ in range(10):
            stuck.failed(ValueError("too large"))
        other.failed(ConnectionError("Redis went again"))  # a new outage, said as one
        other.succeeded()
        clock.now += 3.0
        stuck.succeeded()
        stuck.succeeded()  # nothing failed since: nothing to say
    messages = [record.getMessage() for record in caplog.records]
    assert messages[1].startswith("appending to Redis works again, after 1.0 s (2 writers")
    assert messages[2] == (
        "appending to Redis still fails for channel 'big' (too large), 1.1 s after it worked "
        "again for the other writers: retrying"
    )
    assert messages[3].startswith("appending to Redis failed for channel 'm' (Redis went again)")
    assert messages[4].startswith("appending to Redis works again, after 0.0 s (1 writers")
    assert messages[5] == (
        "appending to Redis works again for channel 'big', after 4.1 s and 10 failed tries"
    )
    assert len(messages) == 6


def test_a_lagging_job_that_fails_in_the_next_outage_is_counted_in_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Redis went twice: the writer still failing from the first outage was said to fail on
    # its own ("still fails ..."), while every writer failed with it (a review).
    clock, group = appends_log()
    a, b = group.job("channel 'a'"), group.job("channel 'b'")
    with caplog.at_level(logging.WARNING, logger="test.retry_log"):
        a.failed(ConnectionError("down"))
        b.failed(ConnectionError("down"))
        a.succeeded()  # the first outage ends; b has not tried again yet
        clock.now += 1.5
        a.failed(ConnectionError("down again"))  # the second outage
        b.failed(ConnectionError("down again"))
        a.succeeded()
        b.succeeded()
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "still fails" in m], messages
    assert messages[2].startswith("appending to Redis failed for channel 'a' (down again)")
    assert messages[3].startswith("appending to Redis works again, after 0.0 s (2 writers")
    assert len(messages) == 4, messages
