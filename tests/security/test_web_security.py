"""Attacks on the job server's HTTP layer (issue 9): each is refused, changes
nothing, and the legitimate request next to it still works.

- a web page POSTs SQL as a "simple" cross-origin request (``text/plain``);
- a foreign ``Origin`` / ``Sec-Fetch-Site``, with and without the token;
- DNS rebinding: a foreign ``Host`` on the loopback server;
- ``--host 127.attacker.example`` passing for loopback, a 1-character token;
- a 400 MB body read whole before it is refused.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from flowsql.errors import ConfigError
from flowsql.server.api import MAX_SQL_BYTES, check_binding, create_app
from flowsql.server.config import TOKEN_ENV, ServerSettings, load_settings, validate_settings
from flowsql.server.jobserver import StreamJobServer
from tests.serving import live_client

TOKEN = "0123456789abcdef-web-test"
PROGRAM = {"X-FlowSQL-Request": "1"}
EVIL = "http://evil.example"
SQL = (
    "CREATE STREAM {name} AS SELECT symbol FROM trades"
    " WITH ('trades.type' = 'generator', 'trades.records' = '10')"
)


@contextmanager
def live(token: str | None = None, **settings: Any) -> Iterator[httpx.Client]:
    """A client of a job server served by uvicorn on 127.0.0.1 (a free port)."""
    server = StreamJobServer(ServerSettings(**settings))
    try:
        with live_client(create_app(server, token=token), timeout=30) as client:
            yield client
    finally:
        server.shutdown()


def job_names(client: httpx.Client, **headers: str) -> list[str]:
    response = client.get("/jobs", headers=headers)
    assert response.status_code == 200, response.text
    return [job["name"] for job in response.json()["jobs"]]


def own_origin(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


# -- cross-origin requests --------------------------------------------------------------------


def test_cross_site_text_plain_post_deploys_nothing() -> None:
    with live() as client:
        # what fetch(url, {method: "POST", mode: "no-cors", body: sql}) sends from a web page
        attack = {"Content-Type": "text/plain", "Origin": EVIL, "Sec-Fetch-Site": "cross-site"}
        refused = client.post("/jobs", content=SQL.format(name="pwned"), headers=attack)
        assert refused.status_code == 403, refused.text
        assert "cross-origin" in refused.json()["error"]
        # an old browser sending neither Origin nor Sec-Fetch-*: still no custom header
        bare = client.post(
            "/jobs", content=SQL.format(name="pwned"), headers={"Content-Type": "text/plain"}
        )
        assert bare.status_code == 403, bare.text
        assert "X-FlowSQL-Request: 1" in bare.json()["error"]
        for method, path in [("POST", "/jobs/x/pause"), ("DELETE", "/jobs/x")]:
            assert client.request(method, path).status_code == 403, (method, path)
        assert job_names(client) == []
        ok = client.post("/jobs", content=SQL.format(name="mine"), headers=PROGRAM)
        assert ok.status_code == 201, ok.text
        assert job_names(client) == ["mine"]


@pytest.mark.parametrize("token", [None, TOKEN], ids=["tokenless", "with-token"])
def test_foreign_origin_is_refused_with_and_without_token(token: str | None) -> None:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    with live(token=token) as client:
        port = client.base_url.port
        foreign = [
            {"Origin": EVIL},
            {"Origin": "null"},
            {"Origin": f"http://localhost:{port + 1 if port < 65535 else 1}"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ]
        for headers in foreign:
            sql = SQL.format(name="pwned")
            response = client.post("/jobs", content=sql, headers={**PROGRAM, **auth, **headers})
            assert response.status_code == 403, (headers, response.text)
            read = client.get("/jobs", headers={**auth, **headers})
            assert read.status_code == 403, (headers, read.text)
        assert job_names(client, **auth) == []
        same = {"Origin": own_origin(client), "Sec-Fetch-Site": "same-origin"}
        ok = client.post("/jobs", json={"sql": SQL.format(name="mine")}, headers={**auth, **same})
        assert ok.status_code == 201, ok.text
        assert job_names(client, **auth) == ["mine"]


# -- DNS rebinding ----------------------------------------------------------------------------


def test_foreign_host_is_refused_dns_rebinding() -> None:
    with live() as client:
        port = client.base_url.port
        for host in [f"evil.example:{port}", f"127.attacker.example:{port}", "evil.example"]:
            for method, path in [("GET", "/jobs"), ("GET", "/health"), ("POST", "/jobs")]:
                response = client.request(
                    method,
                    path,
                    content=SQL.format(name="pwned"),
                    headers={**PROGRAM, "Host": host},
                )
                assert response.status_code == 421, (host, method, path, response.text)
                assert "server.allowed_hosts" in response.json()["error"]
        wrong_port = client.get("/jobs", headers={"Host": f"127.0.0.1:{port + 1}"})
        assert wrong_port.status_code == 421
        assert job_names(client) == []
        for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]:
            assert client.get("/jobs", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_admit_a_proxy_name() -> None:
    with live(allowed_hosts=["flowsql.example.com", "proxy.example:8443"]) as client:
        assert client.get("/jobs", headers={"Host": "flowsql.example.com"}).status_code == 200
        assert client.get("/jobs", headers={"Host": "proxy.example:8443"}).status_code == 200
        assert client.get("/jobs", headers={"Host": "proxy.example:8444"}).status_code == 421
        assert client.get("/jobs", headers={"Host": "evil.example"}).status_code == 421
        proxied = {"Host": "flowsql.example.com", "Origin": "https://flowsql.example.com"}
        assert client.get("/jobs", headers=proxied).status_code == 200


def test_allowed_hosts_setting_is_validated() -> None:
    environ = {"FLOWSQL_SERVER__ALLOWED_HOSTS": "A.example,b.example:8443"}
    settings = load_settings(None, environ=environ).server
    assert settings.allowed_hosts == ("a.example", "b.example:8443")
    assert ServerSettings().allowed_hosts == ()
    for bad in ["http://a.example/", "a.example:99999", "user@a.example", ""]:
        with pytest.raises(ConfigError) as info:
            validate_settings({"server": {"allowed_hosts": [bad]}})
        assert info.value.key == "server.allowed_hosts", bad
        assert "host:port" in info.value.allowed


# -- the legitimate clients -------------------------------------------------------------------


def test_cli_and_same_origin_requests_are_served(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from flowsql.cli.server import register

    cli = typer.Typer()
    register(cli)
    app_sql = tmp_path / "app.sql"
    app_sql.write_text(SQL.format(name="from_cli"))
    with live(token=TOKEN) as client:
        env = {"FLOWSQL_SERVER_URL": str(client.base_url), TOKEN_ENV: TOKEN}
        result = CliRunner().invoke(cli, ["deploy", str(app_sql), "--json"], env=env)
        assert result.exit_code == 0, result.output
        auth = {"Authorization": f"Bearer {TOKEN}"}
        curl = {**auth, **PROGRAM, "Content-Type": "application/x-www-form-urlencoded"}
        assert client.post("/jobs", content=SQL.format(name="curl"), headers=curl).is_success
        page = {**auth, "Origin": own_origin(client), "Sec-Fetch-Site": "same-origin"}
        switched = client.put("/config/processor", json={"processor": "v1"}, headers=page)
        assert switched.status_code == 200, switched.text
        assert job_names(client, **auth) == ["from_cli", "curl"]


# -- binding and tokens -----------------------------------------------------------------------


def test_127_attacker_example_is_not_loopback() -> None:
    for host in ["127.attacker.example", "localhost.attacker.example", "127.0.0.1.nip.io"]:
        assert not ServerSettings(host=host).is_loopback, host
        with pytest.raises(ConfigError) as info:
            check_binding(ServerSettings(host=host), None)
        assert info.value.key == "server.host" and TOKEN_ENV in info.value.allowed
        check_binding(ServerSettings(host=host), TOKEN)
    for host in ["127.0.0.1", "127.5.6.7", "::1", "localhost", "LOCALHOST"]:
        assert ServerSettings(host=host).is_loopback, host
        check_binding(ServerSettings(host=host), None)


def test_short_token_is_refused() -> None:
    server = StreamJobServer(ServerSettings())
    try:
        for weak in ["x", "s3cr3t-token", "a" * 15, "a token with spaces"]:
            with pytest.raises(ConfigError) as info:
                check_binding(ServerSettings(), weak)
            assert info.value.key == TOKEN_ENV and "16" in info.value.allowed
            assert weak not in str(info.value)
            with pytest.raises(ConfigError):
                create_app(server, token=weak)
        check_binding(ServerSettings(host="0.0.0.0"), "a" * 16)
        create_app(server, token="a" * 16)
    finally:
        server.shutdown()


def test_cli_server_refuses_a_short_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from flowsql.cli.server import register

    def serve_forever(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the server started with a 3-character token")

    monkeypatch.setattr(uvicorn, "run", serve_forever)
    cli = typer.Typer()
    register(cli)
    result = CliRunner().invoke(cli, ["server", "--port", "0"], env={TOKEN_ENV: "abc"})
    assert result.exit_code == 2, result.output
    assert TOKEN_ENV in result.output and "16" in result.output


# -- huge bodies ------------------------------------------------------------------------------


def test_body_over_the_limit_is_refused_and_under_it_is_read() -> None:
    with live() as client:
        blank = b" " * MAX_SQL_BYTES
        at_limit = client.post("/jobs", content=iter([blank]), headers=PROGRAM)  # chunked
        assert at_limit.status_code == 400, at_limit.text  # read and parsed: no statement
        over = blank + b" "
        for body in [over, iter([over[: 1 << 19], over[1 << 19 :]])]:
            response = client.post("/jobs", content=body, headers=PROGRAM)
            assert response.status_code == 413, response.text
            assert str(MAX_SQL_BYTES) in response.json()["error"]
        assert job_names(client) == []


SERVE = """
import socket, sys
import uvicorn
from flowsql.server.api import create_app
from flowsql.server.config import ServerSettings
from flowsql.server.jobserver import StreamJobServer
sock = socket.socket(fileno=int(sys.argv[1]))
app = create_app(StreamJobServer(ServerSettings()))
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


@contextmanager
def server_process() -> Iterator[tuple[int, httpx.Client]]:
    """A job server in its own process (its memory is measured alone) on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(sock.fileno())], pass_fds=[sock.fileno()]
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            assert client.get("/health").status_code == 200
            yield proc.pid, client
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_400mb_body_is_refused_without_buffering() -> None:
    total = 400 << 20
    chunk = b"x" * (1 << 20)
    with server_process() as (pid, client):
        client.post("/jobs", content=b"SELECT FROM", headers=PROGRAM)  # warm the code path
        baseline = memory_mb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        for declared in [{}, {"Content-Length": str(total)}]:
            sent = 0

            def body() -> Iterator[bytes]:
                nonlocal sent
                while sent < total:
                    sent += len(chunk)
                    yield chunk

            try:
                response = client.post("/jobs", content=body(), headers={**PROGRAM, **declared})
            except httpx.TransportError:  # the server closed while we were still sending
                pass
            else:
                assert response.status_code == 413, response.text
            assert sent < 64 << 20, f"the server read {sent >> 20} MB of it ({declared})"
        growth = memory_mb(pid, "VmHWM") - baseline
        assert growth < 20, f"server RSS grew {growth:.0f} MB"
        assert client.get("/jobs").json() == {"jobs": []}
