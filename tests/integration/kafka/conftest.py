"""Fixtures for the Kafka tests: one Tansu broker for the whole run.

The broker is started before the first Kafka test and stopped after the last.
If its binary is missing the tests fail (never skip) with the reason.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from flowsql.server.config import ServerSettings  # noqa: E402
from flowsql.server.jobserver import StreamJobServer  # noqa: E402
from tests.broker import Broker, BrokerUnavailable, start_broker  # noqa: E402
from tests.integration.kafka.kafka_helpers import names  # noqa: E402

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``) every Kafka test runs on one
    worker, so one broker serves the whole run while the other tests run beside."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.xdist_group("kafka"))


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    try:
        broker = start_broker()
    except BrokerUnavailable as exc:
        pytest.fail(f"Kafka tests need the Tansu broker: {exc}")
    yield broker
    gc.collect()  # drop clients left in reference cycles before their broker goes away
    broker.stop()


@pytest.fixture(scope="session")
def bootstrap(kafka_broker: Broker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def new_topic(bootstrap: str) -> Callable[..., str]:
    """Create a fresh topic: ``new_topic("trades", partitions=3)`` -> its unique name."""

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{next(names)}-{int(time.time() * 1000) % 100000}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for fut in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            fut.result(10)
        return name

    return make


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StreamJobServer]:
    """A job server whose file roots are the test's directory."""
    server = StreamJobServer(ServerSettings(file_roots=[str(tmp_path)], stop_timeout_s=20))
    try:
        yield server
    finally:
        server.shutdown()
