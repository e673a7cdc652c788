"""Secrets in WITH properties (issue 9): every key that can hold a credential is
masked in ``GET /jobs``, ``GET /jobs/{name}``, ``flowsql explain``, syntax errors
(also with the closing quote missing) and logs, tracebacks included; keys that
merely contain "key" stay visible."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from flowsql.cli.run import register
from flowsql.errors import ConfigError
from flowsql.plan.explain import explain
from flowsql.redaction import (
    MASK,
    install_log_redaction,
    is_secret_key,
    redact_error,
    redact_properties,
    redact_text,
    register_secrets,
    secret_values,
)
from flowsql.server.api import create_app
from flowsql.server.config import Redactor, ServerSettings
from flowsql.server.jobserver import StreamJobServer
from flowsql.sql import parse_one
from tests.serving import live_client

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
JAAS = (
    "org.apache.kafka.common.security.plain.PlainLoginModule required"
    ' username="bob" password="jaas-pw-9z8y";'
)
#: Every key that can hold a credential, with a value and the parts of it that must never show.
SECRETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sasl.password": ("sasl-pw-1a2b", ()),
    "sasl.username": ("sasl-user-3c4d", ()),
    "sasl.jaas.config": (JAAS, ("jaas-pw-9z8y",)),
    "sasl.oauthbearer.client.secret": ("oauth-cs-5e6f", ()),
    "sasl.oauthbearer.config": ("clientId=x clientSecret=oauth-in-7g8h", ("oauth-in-7g8h",)),
    "ssl.key.pem": (PEM, ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",)),
    "ssl.key.password": ("ssl-key-pw-9i0j", ()),
    "ssl.keystore.password": ("keystore-pw-1k2l", ()),
    "ssl.keystore.key": ("keystore-key-3m4n", ()),
    "ssl.truststore.password": ("truststore-pw-5o6p", ()),
    "api.key": ("api-key-7q8r", ()),
    "api_key": ("api-key-9s0t", ()),
    "apiKey": ("api-key-1u2v", ()),
    "basic.auth.user.info": ("bob:auth-info-3w4x", ()),
    "schema.registry.basic.auth.user.info": ("bob:registry-5y6z", ()),
    "my.token": ("token-value-7a8b", ()),
    "credentials": ("cred-value-9c0d", ()),
    "private.key": ("private-key-1e2f", ()),
    "access.key": ("access-key-3g4h", ()),
    "secret": ("secret-value-5i6j", ()),
    "db.pwd": ("pwd-value-7k8l", ()),
}
#: Keys that contain "key", "ssl" or a certificate: not secrets, shown as they are.
HARMLESS: dict[str, str] = {
    "key.columns": "symbol",
    "key.format": "json-keys",
    "key.field": "symbol-field",
    "partition.key": "symbol-part",
    "api.key.columns": "symbol-cols",
    "ssl.certificate.pem": "PUBLIC-CERT-abc",
    "topic": "trades-out",
    "security.protocol": "SASL_SSL",
}
#: Paths are visible too (the job server checks them against ``server.file_roots``).
HARMLESS_PATHS = ("ssl.truststore.location", "ssl.ca.location", "ssl.certificate.location")


def hidden(key: str) -> tuple[str, ...]:
    value, parts = SECRETS[key]
    return (value, *parts)


def sql_quote(value: str) -> str:
    return value.replace("'", "''")


def job_sql(name: str, props: dict[str, str]) -> str:
    extra = "".join(f", '{name}.properties.{k}' = '{sql_quote(v)}'" for k, v in props.items())
    return (
        f"CREATE STREAM {name} AS SELECT symbol, price FROM trades"
        f" WITH ('trades.type' = 'generator', 'trades.records' = '10'{extra})"
    )


def unterminated(key: str, value: str, quote: str = "'") -> str:
    """A deploy whose secret value never closes: the rest of the text is the string."""
    return (
        "CREATE STREAM bad AS SELECT symbol FROM trades\n"
        f"WITH ('trades.type' = 'generator', 'bad.properties.{key}' = {quote}{value}"
    )


# -- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [*SECRETS, "kafka.sasl.password", "SSL.KEY.PEM"])
def test_credential_keys_are_secret(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", [*HARMLESS, *HARMLESS_PATHS, "trades.key.columns", "bootstrap.servers"]
)
def test_keys_that_only_mention_key_stay_visible(key: str) -> None:
    assert not is_secret_key(key)
    assert redact_properties({key: "shown"}) == {key: "shown"}


@pytest.mark.parametrize(
    "text",
    [
        "WITH ('sasl.password' = 'hunter2-x",  # unterminated
        "WITH ('sasl.password' = \"hunter2-x",  # double quotes, unterminated
        "WITH ('sasl.password' 'hunter2-x')",  # missing '='
        "WITH ('a' 'b', 'sasl.password' = 'hunter2-x', 'c' = 'd')",
        "WITH (`sasl.password` = 'hunter2-x')",
        'required username="bob" password="hunter2-x";',  # JAAS
        "{'sasl.password': 'hunter2-x', 'topic': 'x'}",  # dict repr
        '{"sasl.password": "hunter2-x"}',  # JSON
        "sasl.password=hunter2-x, topic=t",  # librdkafka config dump
        "registry https://bob:hunter2-x@registry:8081/subjects",
        f"{PEM.replace('MIIEvQIBADANBgkqhkiG9w0BAQEFAASC', 'hunter2-x')} then",
        "WITH ('sasl.password' = 'it''s hunter2-x')",
    ],
)
def test_values_are_masked_in_text(text: str) -> None:
    masked = redact_text(text)
    assert "hunter2-x" not in masked and MASK in masked


def test_prose_and_other_pairs_are_left_alone() -> None:
    text = "for 'x.sasl.password': allowed a, b; WHERE price = 5 AND 'key.format' = 'json'"
    assert redact_text(text) == text


def test_registered_values_are_masked_alone() -> None:
    register_secrets(["raw-value-only-1234"])
    assert redact_text("connect failed: raw-value-only-1234 rejected") == (
        "connect failed: **** rejected"
    )


def test_secret_values_include_jaas_inner_password_and_url_password() -> None:
    values = secret_values({"sasl.jaas.config": JAAS, "registry.url": "https://u:url-pw-1@h"})
    assert {"jaas-pw-9z8y", "url-pw-1", JAAS} <= set(values)


def test_config_error_on_a_secret_key_hides_the_value() -> None:
    error = ConfigError("kafka.sasl.mechanism", "leaked-mech-1", ("PLAIN", "SCRAM-SHA-256"))
    assert "leaked-mech-1" not in redact_error(error)
    assert "kafka.sasl.mechanism" in redact_error(error)


# -- the job server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """A client of a live job server (uvicorn on a free loopback port)."""
    server = StreamJobServer(ServerSettings())
    try:
        with live_client(create_app(server)) as c:
            yield c
    finally:
        server.shutdown()


def deploy(client: httpx.Client, sql: str) -> httpx.Response:
    return client.post("/jobs", json={"sql": sql})


def finished(client: httpx.Client, name: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        status = client.get(f"/jobs/{name}").json()
        if status["state"] in ("FINISHED", "FAILED") or time.monotonic() > deadline:
            return status
        time.sleep(0.01)


@pytest.mark.parametrize("key", list(SECRETS))
def test_status_and_list_never_show_the_secret(client: httpx.Client, key: str) -> None:
    name = "j_" + key.replace(".", "_").lower()
    response = deploy(client, job_sql(name, {key: SECRETS[key][0]}))
    assert response.status_code == 201, response.text
    status = finished(client, name)
    assert status["properties"][f"{name}.properties.{key}"] == MASK
    shown = [response.text, client.get(f"/jobs/{name}").text, client.get("/jobs").text]
    for text in shown:
        for part in hidden(key):
            assert part not in text, (key, text)


@pytest.mark.parametrize("key", list(SECRETS))
@pytest.mark.parametrize("quote", ["'", '"'])
def test_unterminated_value_is_masked_in_the_400(
    client: httpx.Client, key: str, quote: str
) -> None:
    value = SECRETS[key][0].replace(quote, "")
    response = deploy(client, unterminated(key, value, quote))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["line"] == 2 and "unterminated" in body["error"]
    assert value not in response.text
    assert value.splitlines()[0] not in response.text


def test_harmless_keys_stay_visible_in_status(client: httpx.Client) -> None:
    response = deploy(client, job_sql("visible", {**HARMLESS, "sasl.password": "pw-visible-1"}))
    assert response.status_code == 201, response.text
    properties = finished(client, "visible")["properties"]
    for key, value in HARMLESS.items():
        assert properties[f"visible.properties.{key}"] == value
    assert properties["visible.properties.sasl.password"] == MASK


@pytest.fixture
def redacted_logs() -> Iterator[None]:
    """install_log_redaction() for one test: the record factory and thread hook restored."""
    factory, hook = logging.getLogRecordFactory(), threading.excepthook
    install_log_redaction()
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)
        threading.excepthook = hook


@pytest.mark.usefixtures("redacted_logs")
def test_tracebacks_in_logs_are_masked(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    value = "sasl-log-secret-42"
    assert deploy(client, job_sql("logged", {"sasl.password": value})).status_code == 201
    caplog.set_level(logging.INFO)
    log = logging.getLogger("flowsql.server.test")
    try:
        raise RuntimeError(f"broker refused {value} (config {{'sasl.password': '{value}'}})")
    except RuntimeError:
        log.exception("job logged failed: sasl.password=%s", value)
    log.warning("raw value: %s", value)
    assert "RuntimeError: broker refused ****" in caplog.text
    assert "Traceback" in caplog.text
    assert value not in caplog.text
    assert all(value not in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("redacted_logs")
def test_uncaught_thread_exceptions_are_logged_masked(caplog: pytest.LogCaptureFixture) -> None:
    Redactor({"ssl.key.password": "thread-secret-77"})

    def crash() -> None:
        raise ValueError("cannot open key with thread-secret-77")

    thread = threading.Thread(target=crash, name="crasher")
    thread.start()
    thread.join()
    assert "uncaught ValueError in thread crasher" in caplog.text
    assert "ValueError: cannot open key with ****" in caplog.text
    assert "thread-secret-77" not in caplog.text


# -- explain and the CLI ----------------------------------------------------------------------


@pytest.mark.parametrize("key", list(SECRETS))
def test_explain_never_shows_the_secret(key: str) -> None:
    text = explain(parse_one(job_sql("e", {key: SECRETS[key][0]})))
    assert f"e.properties.{key} = {MASK}" in text
    for part in hidden(key):
        assert part not in text


def test_explain_shows_harmless_keys() -> None:
    text = explain(parse_one(job_sql("e", HARMLESS)))
    for key, value in HARMLESS.items():
        assert f"e.properties.{key} = {value}" in text


def run_cli(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_cli_explain_and_syntax_errors_never_show_the_secret(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.sql", tmp_path / "bad.sql"
    good.write_text(job_sql("c", {k: v for k, (v, _) in SECRETS.items()}))
    code, out = run_cli("explain", str(good))
    assert code == 0, out
    for key in SECRETS:
        assert f"c.properties.{key} = {MASK}" in out
        assert all(part not in out for part in hidden(key)), key
    for key, (value, _) in SECRETS.items():
        clean = value.replace("'", "")
        bad.write_text(unterminated(key, clean))
        for command in ("explain", "validate", "run"):
            code, out = run_cli(command, str(bad))
            assert code != 0 and "unterminated string" in out, out
            assert clean not in out and clean.splitlines()[0] not in out, (command, key)


def test_cli_subprocess_stderr_masks_an_unterminated_password(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text(unterminated("sasl.password", "hunter2-subprocess"))
    done = subprocess.run(
        [sys.executable, "-c", "from flowsql.cli import main; main()", "explain", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unterminated string at line 2" in done.stderr
    assert "'bad.properties.sasl.password' = '*" in done.stderr
    assert "hunter2-subprocess" not in done.stderr + done.stdout
