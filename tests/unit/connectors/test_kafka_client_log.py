"""librdkafka's log lines reach Python logging once per distinct message."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("confluent_kafka")

from flowsql.connectors.kafka.client import (  # noqa: E402
    CLIENT_LOG,
    TopicSpec,
    admin_config,
    consumer_config,
    producer_config,
)


def test_a_repeated_client_line_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    line = "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed"
    with caplog.at_level(logging.ERROR, logger=CLIENT_LOG.name):
        for thread in ("main", "app", "main"):
            CLIENT_LOG.error(line.replace("thrd:", f"thrd:{thread}:"))
        CLIENT_LOG.error("[thrd:main]: another problem")
    messages = [r.getMessage() for r in caplog.records if r.name == CLIENT_LOG.name]
    assert len(messages) == 2
    assert messages[1].endswith("another problem")


def test_every_client_logs_through_python_logging() -> None:
    spec = TopicSpec(name="t", topic="t", bootstrap="127.0.0.1:1")
    assert consumer_config(spec)["logger"] is CLIENT_LOG
    assert producer_config("127.0.0.1:1")["logger"] is CLIENT_LOG
    assert admin_config("127.0.0.1:1")["logger"] is CLIENT_LOG
