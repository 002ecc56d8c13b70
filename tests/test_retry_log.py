"""RetryLog: one warning per outage of Redis and one when the job works again."""

from __future__ import annotations

import logging

import pytest

from trio_stream._engine.retry_log import RetryLog


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
