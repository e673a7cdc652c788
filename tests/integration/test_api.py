"""The REST API over a real StreamJobServer: deploy, list, status, control, metrics,
tokens, file roots and masked secrets."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowsql.errors import ConfigError
from flowsql.server.api import check_binding, create_app
from flowsql.server.config import ServerSettings
from flowsql.server.jobserver import StreamJobServer
from tests.serving import live

TOKEN = "s3cr3t-token-0123456789"


def generator_job(name: str, records: int | str = 5000, extra: str = "") -> str:
    return (
        f"CREATE STREAM {name} AS SELECT symbol, price, quantity FROM trades WHERE price > 100"
        f" WITH ('trades.type' = 'generator', 'trades.records' = '{records}',"
        f" 'trades.batch_size' = '500'{extra})"
    )


@contextmanager
def make_client(
    tmp_path: Path, token: str | None = None, **settings: Any
) -> Iterator[httpx.Client]:
    """An HTTP client of a live job server whose file roots are ``tmp_path/data``."""
    settings.setdefault("file_roots", [str(tmp_path / "data")])
    (tmp_path / "data").mkdir(exist_ok=True)
    server = StreamJobServer(ServerSettings(**settings))
    try:
        with (
            live(create_app(server, token=token)) as url,
            httpx.Client(base_url=url, timeout=60, headers={"X-FlowSQL-Request": "1"}) as c,
        ):
            yield c
    finally:
        server.shutdown()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    with make_client(tmp_path, v2_config={"num_partitions": 2}) as c:
        yield c


def wait_for(client: httpx.Client, name: str, check: Callable[[dict], bool], what: str) -> dict:
    """Poll the job's status until ``check``; fails only if it never holds."""
    deadline = time.monotonic() + 60
    while True:
        status = client.get(f"/jobs/{name}").json()
        if check(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}; last status {status}")
        time.sleep(0.01)


def finished(client: httpx.Client, name: str) -> dict:
    return wait_for(client, name, lambda s: s["state"] in ("FINISHED", "FAILED"), f"{name} ends")


def test_health_needs_nothing(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_deploy_list_status_output_stop(client: httpx.Client) -> None:
    response = client.post(
        "/jobs",
        content=generator_job("dear") + ";\n" + generator_job("forever", "unbounded"),
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 201, response.text
    assert [j["name"] for j in response.json()["jobs"]] == ["dear", "forever"]
    assert [j["name"] for j in client.get("/jobs").json()["jobs"]] == ["dear", "forever"]
    status = finished(client, "dear")
    assert status["state"] == "FINISHED"
    assert status["records_in"] == 5000
    assert 0 < status["records_out"] < 5000
    assert status["processor"] == "SimpleJobProcessor"
    assert (status["processor_version"], status["num_partitions"]) == ("V1", 1)
    assert status["watermark_ms"] > 1_704_067_200_000
    for key in ("records_per_second", "late_records", "dead_lettered", "last_error"):
        assert key in status
    rows = client.get("/jobs/dear/output", params={"limit": 5}).json()["rows"]
    assert len(rows) == 5 and all(row["price"] > 100 for row in rows)
    running = client.get("/jobs/forever").json()
    assert running["state"] == "RUNNING"
    stopped = client.delete("/jobs/forever")
    assert stopped.status_code == 200 and stopped.json()["state"] == "STOPPED"
    assert client.get("/jobs/forever").status_code == 404
    assert [j["name"] for j in client.get("/jobs").json()["jobs"]] == ["dear"]


def test_json_body_and_generated_names(client: httpx.Client) -> None:
    sql = "SELECT symbol FROM trades WITH ('trades.type'='generator', 'trades.records'='10')"
    response = client.post("/jobs", json={"sql": sql})
    assert response.status_code == 201, response.text
    assert response.json()["jobs"][0]["name"] == "query_1"
    assert finished(client, "query_1")["records_out"] == 10


def test_pause_resume_and_switch(client: httpx.Client) -> None:
    client.post("/jobs", content=generator_job("live", "unbounded"))
    assert client.post("/jobs/live/pause").json()["state"] == "PAUSED"
    held = client.get("/jobs/live").json()["records_in"]
    switched = client.put("/jobs/live/processor", json={"processor": "v2", "num_partitions": 2})
    assert switched.status_code == 200, switched.text
    body = switched.json()
    assert (body["processor_version"], body["num_partitions"]) == ("V2", 2)
    assert body["switches"] == ["V1(1) -> V2(2)"]
    assert client.get("/jobs/live").json()["records_in"] == held  # still paused
    assert client.post("/jobs/live/resume").json()["state"] == "RUNNING"
    wait_for(client, "live", lambda s: s["records_in"] > held, "the job reads again")
    assert client.delete("/jobs/live").json()["state"] == "STOPPED"


def test_errors_name_the_problem(client: httpx.Client) -> None:
    bad_sql = client.post("/jobs", content="SELECT symbol FROM trades WHERE")
    assert bad_sql.status_code == 400
    assert bad_sql.json()["line"] == 1
    bad_mode = client.post("/jobs", content="-- @job_mode: v9\n" + generator_job("x"))
    assert bad_mode.status_code == 400
    assert bad_mode.json()["key"] == "x.@job_mode"
    assert bad_mode.json()["value"] == "v9"
    assert "v1, v2" in bad_mode.json()["allowed"]
    assert client.get("/jobs/nope").status_code == 404
    assert client.post("/jobs/nope/pause").status_code == 404
    client.post("/jobs", content=generator_job("x", 10))
    finished(client, "x")
    bad_switch = client.put("/jobs/x/processor", json={"processor": "v3"})
    assert bad_switch.status_code in (400, 409)
    assert client.post("/jobs", json={"query": "SELECT 1"}).status_code == 400
    assert client.get("/jobs").json()["jobs"][0]["name"] == "x"


def test_runtime_default_applies_to_new_deploys(client: httpx.Client) -> None:
    client.post("/jobs", content=generator_job("before", 10))
    response = client.put("/config/processor", json={"processor": "v2", "num_partitions": 2})
    assert response.json()["default_processor"] == {"version": "v2", "num_partitions": 2}
    client.post("/jobs", content=generator_job("after", 10))
    assert client.get("/jobs/before").json()["processor_version"] == "V1"
    after = finished(client, "after")
    assert (after["processor_version"], after["num_partitions"], after["state"]) == (
        "V2",
        2,
        "FINISHED",
    )
    assert client.put("/config/processor", json={"processor": "v0"}).status_code == 400


def test_annotation_wins_over_default(client: httpx.Client) -> None:
    client.post(
        "/jobs", content="-- @job_mode: v2\n-- @num_partitions: 2\n" + generator_job("v2j", 2000)
    )
    status = finished(client, "v2j")
    assert (status["processor_version"], status["num_partitions"], status["state"]) == (
        "V2",
        2,
        "FINISHED",
    )
    assert status["records_in"] == 2000


def test_metrics(client: httpx.Client) -> None:
    client.post("/jobs", content=generator_job("m", 1000))
    finished(client, "m")
    text = client.get("/metrics").text
    assert 'flowsql_job_records_in_total{job="m"} 1000.0' in text
    assert 'flowsql_job_state{job="m",state="FINISHED"} 1.0' in text
    assert 'flowsql_job_state{job="m",state="RUNNING"} 0.0' in text
    assert 'processor_version="V1"' in text
    assert 'flowsql_job_dead_lettered_total{job="m"} 0.0' in text
    assert 'flowsql_job_late_records_total{job="m"} 0.0' in text


# -- security -------------------------------------------------------------------------------


def test_token_required_for_everything_but_health(tmp_path: Path) -> None:
    with make_client(tmp_path, token=TOKEN) as client:
        assert client.get("/health").status_code == 200
        for method, path in [("get", "/jobs"), ("get", "/metrics"), ("get", "/config")]:
            response = getattr(client, method)(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        refused = client.post("/jobs", content=generator_job("nope", 10))
        assert refused.status_code == 401
        wrong = client.post(
            "/jobs",
            content=generator_job("nope", 10),
            headers={"Authorization": "Bearer wrong"},
        )
        assert wrong.status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/jobs", headers=auth).json() == {"jobs": []}  # nothing changed
        ok = client.post("/jobs", content=generator_job("yes", 10), headers=auth)
        assert ok.status_code == 201


def test_non_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigError) as info:
        check_binding(ServerSettings(host="0.0.0.0"), None)
    assert info.value.key == "server.host" and "FLOWSQL_API_TOKEN" in info.value.allowed
    check_binding(ServerSettings(host="0.0.0.0"), TOKEN)
    check_binding(ServerSettings(host="127.0.0.1"), None)


def write_jsonl(path: Path, rows: int) -> None:
    path.write_text(
        "".join(
            json.dumps({"symbol": f"S{i % 3}", "price": 100.0 + i, "quantity": i, "timestamp": i})
            + "\n"
            for i in range(rows)
        )
    )


def file_job(name: str, source: Path, sink: Path | None = None) -> str:
    out = f", '{name}.type' = 'file_sink', '{name}.path' = '{sink}'" if sink else ""
    return (
        f"CREATE STREAM {name} AS SELECT symbol, price FROM trades"
        f" WITH ('trades.type' = 'file_source', 'trades.path' = '{source}',"
        f" 'trades.format' = 'jsonl'{out})"
    )


def test_file_sources_and_sinks_are_confined_to_file_roots(
    client: httpx.Client, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    inside = root / "in.jsonl"
    write_jsonl(inside, 20)
    outside = tmp_path / "outside.jsonl"
    write_jsonl(outside, 5)
    (root / "escape").symlink_to(tmp_path)
    refused = [
        file_job("a", outside),
        file_job("b", root / ".." / "outside.jsonl"),
        file_job("c", root / "escape" / "outside.jsonl"),
        file_job("d", inside, sink=tmp_path / "stolen.jsonl"),
    ]
    for sql in refused:
        response = client.post("/jobs", content=sql)
        assert response.status_code == 403, (sql, response.text)
        assert str(root) in response.json()["error"]
    assert client.get("/jobs").json()["jobs"] == []
    assert not (tmp_path / "stolen.jsonl").exists()
    response = client.post("/jobs", content=file_job("ok", inside, sink=root / "out.jsonl"))
    assert response.status_code == 201, response.text
    assert finished(client, "ok")["state"] == "FINISHED"
    assert len((root / "out.jsonl").read_text().splitlines()) == 20


def test_secrets_never_shown(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "hunter2-pa55"
    sql = generator_job("s", 10, extra=f", 's.properties.sasl.password' = '{secret}'")
    assert client.post("/jobs", content=sql).status_code == 201
    finished(client, "s")
    shown = [
        client.get("/jobs/s").text,
        client.get("/jobs").text,
        client.get("/metrics").text,
        client.get("/config").text,
    ]
    bad = client.post("/jobs", content=f"SELECT FROM WITH ('sasl.password' = '{secret}')")
    assert bad.status_code == 400
    shown.append(bad.text)
    for text in shown:
        assert secret not in text
    assert "****" in shown[0]
    assert secret not in caplog.text


# -- the CLI client commands ------------------------------------------------------------------


def test_cli_deploy_jobs_status_switch_stop(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from flowsql.cli.server import register

    cli = typer.Typer()
    register(cli)
    runner = CliRunner()
    app_sql = tmp_path / "app.sql"
    app_sql.write_text(generator_job("tick", "unbounded") + ";\n" + generator_job("done", 100))
    with make_client(tmp_path, token=TOKEN) as http:
        url = str(http.base_url)
        env = {"FLOWSQL_SERVER_URL": url, "FLOWSQL_API_TOKEN": TOKEN}

        def flowsql(*args: str, code: int = 0, **extra: str) -> str:
            result = runner.invoke(cli, list(args), env={**env, **extra})
            assert result.exit_code == code, result.output
            return result.output

        deployed = json.loads(flowsql("deploy", str(app_sql), "--json"))
        assert [j["name"] for j in deployed["jobs"]] == ["tick", "done"]
        assert "tick" in flowsql("jobs")
        status = json.loads(flowsql("status", "tick", "--json"))
        assert status["state"] == "RUNNING"
        switched = json.loads(
            flowsql("switch", "tick", "--processor", "v2", "--partitions", "2", "--json")
        )
        assert switched["processor_version"] == "V2"
        assert "STOPPED" in flowsql("stop", "tick")
        assert "no job named 'tick'" in flowsql("status", "tick", code=1)
        assert "HTTP 401" in flowsql("jobs", code=1, FLOWSQL_API_TOKEN="wrong")
        assert "line 1" in flowsql("deploy", str(write_sql(tmp_path, "SELECT FROM")), code=1)
    unreachable = runner.invoke(cli, ["jobs", "--server", url])
    assert unreachable.exit_code == 1 and "cannot reach" in unreachable.output


def write_sql(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.sql"
    path.write_text(text)
    return path


def test_cli_server_refuses_a_public_address_without_token(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from flowsql.cli.server import register

    cli = typer.Typer()
    register(cli)
    config = tmp_path / "flowsql.yaml"
    config.write_text("server:\n  host: 0.0.0.0\n")
    result = CliRunner().invoke(
        cli, ["server", "--config", str(config)], env={"FLOWSQL_API_TOKEN": ""}
    )
    assert result.exit_code == 2
    assert "server.host" in result.output and "FLOWSQL_API_TOKEN" in result.output
    config.write_text("server:\n  processor_architecture: v3\n")
    result = CliRunner().invoke(cli, ["server", "--config", str(config)])
    assert result.exit_code == 2 and "'v3'" in result.output and "v1, v2" in result.output
