"""The WITH-key registry: unknown keys refused with the closest key, aliases,
one duration grammar for every duration key, and the docs kept in step."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.run import register
from flowsql.errors import ConfigError
from flowsql.plan import options
from flowsql.runtime.failures import FailurePolicy, FailureStrategy
from flowsql.runtime.worker import heartbeat_timeout
from flowsql.server.api import create_app
from flowsql.server.config import ServerSettings
from flowsql.server.jobserver import StreamJobServer
from flowsql.sql import parse_one, validate
from flowsql.sql.windows import allowed_lateness_ms
from tests.serving import PROGRAM_HEADERS, live

DOC = Path(__file__).parents[3] / "docs" / "configuration.md"
GENERATOR = "'trades.type' = 'generator', 'trades.records' = '10'"


def _query(with_: str) -> str:
    return f"SELECT symbol, price FROM trades WITH ({GENERATOR}, {with_})"


@pytest.mark.parametrize(
    ("with_", "message"),
    [
        (
            "'watermark.allowed_latenes' = '5s'",
            "unknown WITH key 'watermark.allowed_latenes'; "
            "did you mean 'watermark.allowed_lateness'?",
        ),
        (
            "'failure.stratgy' = 'fail_batch'",
            "unknown WITH key 'failure.stratgy'; did you mean 'failure.strategy'?",
        ),
        (
            "'trades.recods' = '5'",
            "unknown WITH key 'trades.recods'; did you mean 'trades.records'?",
        ),
        ("'trade.seed' = '5'", "unknown WITH key 'trade.seed'; did you mean 'trades.seed'?"),
    ],
)
def test_unknown_keys_are_refused_with_the_closest_key(with_: str, message: str) -> None:
    errors = validate(_query(with_))
    assert [str(e) for e in errors] == [message]
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_one(_query(with_))


def test_stream_keys_are_checked_against_their_connector() -> None:
    (error,) = validate(_query("'trades.topic' = 'x'"))  # a Kafka key on a generator
    assert isinstance(error, options.UnknownOptionError)
    assert error.key == "trades.topic" and "trades.seed" in error.allowed
    kafka = "'trades.type' = 'kafka_source', 'trades.topic' = 't'"
    assert validate(f"SELECT a FROM trades WITH ({kafka})") == []
    (typo,) = validate(f"SELECT a FROM trades WITH ({kafka}, 'trades.bootstrap.server' = 'h')")
    assert "did you mean 'trades.bootstrap.servers'?" in str(typo)


def test_client_properties_pass_through_only_to_kafka() -> None:
    kafka = "'trades.type' = 'kafka_source', 'trades.properties.fetch.wait.max.ms' = '5'"
    assert validate(f"SELECT a FROM trades WITH ({kafka})") == []
    (error,) = validate(_query("'trades.properties.fetch.wait.max.ms' = '5'"))
    assert error.key == "trades.properties.fetch.wait.max.ms"  # type: ignore[attr-defined]


def test_ksqldb_keys_are_refused_with_the_flowsql_spelling() -> None:
    (error,) = validate("CREATE STREAM s WITH (KAFKA_TOPIC = 'out') AS SELECT a FROM t")
    assert str(error) == "unknown WITH key 'KAFKA_TOPIC'; did you mean 's.topic'?"


def test_declared_keys_pass() -> None:
    sql = (
        "CREATE STREAM out AS SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol "
        "WINDOW TUMBLING(1s) WITH ('trades.type' = 'file_source', 'trades.path' = 't.jsonl',"
        " 'trades.event.time.field' = 'ts', 'out.type' = 'file_sink', 'out.path' = 'o.csv',"
        " 'watermark.allowed_lateness' = '1h', 'late.data.strategy' = 'dlq',"
        " 'dlq.path' = 'd.jsonl', 'v2.heartbeat.timeout' = '1h', 'retry.backoff' = '1h')"
    )
    assert validate(sql) == []


def test_old_spellings_are_aliases() -> None:
    old = {"failure_strategy": "retry_with_backoff", "max_retries": "5", "retry_backoff": "2s"}
    new = {
        "failure.strategy": "retry_with_backoff",
        "retry.max_retries": "5",
        "retry.backoff": "2s",
    }
    expected = FailurePolicy(FailureStrategy.RETRY_WITH_BACKOFF, 5, 2000)
    assert FailurePolicy.from_properties(old) == FailurePolicy.from_properties(new) == expected
    assert validate(_query(", ".join(f"'{k}' = '{v}'" for k, v in old.items()))) == []
    with pytest.raises(ConfigError) as info:
        FailurePolicy.from_properties({"retry_backoff": "soon"}, "j")
    assert info.value.key == "j.retry_backoff"  # named as the user wrote it


@pytest.mark.parametrize("option", [o for o in options.JOB_OPTIONS if o.kind == "duration"])
def test_one_duration_grammar_for_every_duration_key(option: options.Option) -> None:
    for text, ms in [("1h", 3_600_000), ("500ms", 500), ("5s", 5000), ("5 seconds", 5000)]:
        assert options.get({option.name: text}, option) == ms
    assert options.get({option.name: "250"}, option) == 250
    with pytest.raises(ConfigError, match=re.escape(option.name)):
        options.get({option.name: "soon"}, option)


def test_readers_take_one_hour() -> None:
    assert allowed_lateness_ms({"watermark.allowed_lateness": "1h"}) == 3_600_000
    assert heartbeat_timeout({"v2.heartbeat.timeout": "1h"}) == 3600.0
    assert FailurePolicy.from_properties({"retry_backoff": "1h"}).retry_backoff_ms == 3_600_000


def test_typed_defaults() -> None:
    assert options.get({}, options.RETRY_BACKOFF) == 100
    assert options.get({}, options.HEARTBEAT_TIMEOUT) == 10_000
    assert options.get({}, options.DLQ_PATH) is None
    with pytest.raises(ConfigError, match="an integer 0 to 1000"):
        options.get({"max_retries": "1001"}, options.MAX_RETRIES)


def test_cli_validate_run_and_explain_refuse_an_unknown_key(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    sql = tmp_path / "q.sql"
    sql.write_text(_query("'watermark.allowed_latenes' = '5s'"))
    for command in ("validate", "run", "explain"):
        result = CliRunner().invoke(app, [command, str(sql)])
        assert result.exit_code != 0, command
        assert "did you mean 'watermark.allowed_lateness'?" in result.output, command


def test_server_deploy_refuses_an_unknown_key_with_400(tmp_path: Path) -> None:
    server = StreamJobServer(ServerSettings(file_roots=[str(tmp_path)]))
    try:
        with (
            live(create_app(server)) as url,
            httpx.Client(base_url=url, timeout=30, headers=PROGRAM_HEADERS) as client,
        ):
            sql = "CREATE STREAM s AS " + _query("'trades.recods' = '5'")
            response = client.post("/jobs", content=sql)
            assert response.status_code == 400, response.text
            body = response.json()
            assert body["key"] == "trades.recods"
            assert "did you mean 'trades.records'?" in body["error"]
            assert client.get("/jobs").json()["jobs"] == []
    finally:
        server.shutdown()


def test_the_docs_hold_the_registry_table() -> None:
    text = DOC.read_text()
    begin, end = "<!-- options:begin -->\n", "<!-- options:end -->"
    documented = text[text.index(begin) + len(begin) : text.index(end)]
    assert documented == options.markdown()
    job_rows = re.findall(r"^\| `([^`<]+)`[^|]*\| ([^|]*) \|", documented, re.M)
    declared = {o.name: f"`{o.default}`" if o.default else "" for o in options.JOB_OPTIONS}
    assert dict(job_rows) == declared
