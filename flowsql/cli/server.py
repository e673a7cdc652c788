"""Job server commands: ``flowsql server`` runs it; ``deploy``, ``jobs``, ``status``,
``stop``, ``pause``, ``resume`` and ``switch`` talk to it over HTTP.

The client commands reach ``--server`` (default ``$FLOWSQL_SERVER_URL``, else
http://127.0.0.1:8080), send ``$FLOWSQL_API_TOKEN`` as a Bearer token when set, and
``X-FlowSQL-Request: 1`` (the server refuses changes without it or a JSON body).
Exit codes: 0 success; 1 the server refused the request or cannot be reached;
2 a bad option or an unreadable file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from flowsql.cli.errors import fail
from flowsql.errors import ConfigError
from flowsql.redaction import install_log_redaction
from flowsql.server.config import CLIENT_HEADER, TOKEN_ENV, load_settings

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "FLOWSQL_SERVER_URL"
DEFAULT_CONFIG = Path("flowsql.yaml")

JobName = Annotated[str, typer.Argument(help="Job name.")]
ServerUrl = Annotated[
    str,
    typer.Option("--server", envvar=URL_ENV, help="Job server URL.", show_default=True),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]


def register(app: typer.Typer) -> None:
    """Add the job server commands to the ``flowsql`` app."""
    app.command("server")(server)
    app.command("deploy")(deploy)
    app.command("jobs")(jobs)
    app.command("status")(status)
    app.command("stop")(stop)
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("switch")(switch)


# -- flowsql server --------------------------------------------------------------------------


def server(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML file (default: ./flowsql.yaml when it exists)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Listen address (overrides the file).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (overrides the file).")] = None,
    processor: Annotated[
        str | None, typer.Option("--processor", help="Default processor for new jobs: v1 or v2.")
    ] = None,
    partitions: Annotated[
        int | None, typer.Option("--partitions", help="Default V2 partitions.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the job server (REST API) until interrupted."""
    from flowsql.server.api import serve  # the web stack loads for this command only

    path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    overrides = _overrides(host, port, processor, partitions)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction()  # secrets never reach the log, tracebacks included
    try:
        settings = load_settings(path, overrides=overrides)
        serve(settings.server, token=os.environ.get(TOKEN_ENV) or None, log_level=log_level)
    except ConfigError as exc:
        fail(str(exc), code=2)


def _overrides(
    host: str | None, port: int | None, processor: str | None, partitions: int | None
) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    if processor is not None:
        server["processor_architecture"] = processor
    if partitions is not None:
        server["v2_config"] = {"num_partitions": partitions}
    return {"server": server} if server else {}


# -- the HTTP client commands -------------------------------------------------------------------


def deploy(
    file: Annotated[Path, typer.Argument(help="SQL file: one job per statement.")],
    url: ServerUrl = DEFAULT_URL,
    as_json: AsJson = False,
    restore: Annotated[
        bool,
        typer.Option(
            "--restore/--no-restore",
            help="Continue a stopped job's state when the same statement is deployed again.",
        ),
    ] = True,
) -> None:
    """Deploy a SQL app to the job server."""
    try:
        sql = file.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read SQL file {file}: {exc.strerror or exc}", code=2)
    body = _request(
        "POST",
        url,
        "/jobs",
        content=sql,
        headers={"content-type": "text/plain"},
        params={"restore": str(restore).lower()},
    )
    _show(body, as_json, lambda: _jobs_table(body["jobs"], "deployed"))


def jobs(url: ServerUrl = DEFAULT_URL, as_json: AsJson = False) -> None:
    """List the server's jobs."""
    body = _request("GET", url, "/jobs")
    _show(body, as_json, lambda: _jobs_table(body["jobs"], "jobs"))


def status(
    name: JobName,
    url: ServerUrl = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Show one job's status."""
    _job_request("GET", url, f"/jobs/{name}", as_json)


def stop(
    name: JobName,
    url: ServerUrl = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Stop a job (at a batch boundary) and remove it from the server."""
    _job_request("DELETE", url, f"/jobs/{name}", as_json)


def pause(
    name: JobName,
    url: ServerUrl = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Pause a job at the next batch boundary."""
    _job_request("POST", url, f"/jobs/{name}/pause", as_json)


def resume(
    name: JobName,
    url: ServerUrl = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Resume a paused job."""
    _job_request("POST", url, f"/jobs/{name}/resume", as_json)


def switch(
    name: JobName,
    processor: Annotated[str, typer.Option("--processor", help="v1 or v2.")],
    partitions: Annotated[int | None, typer.Option("--partitions", help="V2 partitions.")] = None,
    url: ServerUrl = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Move a running job to another processor without losing or repeating rows."""
    payload: dict[str, Any] = {"processor": processor}
    if partitions is not None:
        payload["num_partitions"] = partitions
    _job_request("PUT", url, f"/jobs/{name}/processor", as_json, json=payload)


def _job_request(method: str, url: str, path: str, as_json: bool, **kwargs: Any) -> None:
    """One request about one job; show the job's status it answers with."""
    body = _request(method, url, path, **kwargs)
    _show(body, as_json, lambda: _status_table(body))


def _request(method: str, url: str, path: str, **kwargs: Any) -> Any:
    """Send one request; exit with the server's error message when it refuses."""
    headers = {CLIENT_HEADER: "1", **kwargs.pop("headers", {})}
    token = os.environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            response = client.request(method, path, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        fail(
            f"cannot reach the flowsql server at {url} ({exc}); is `flowsql server` running?",
            code=1,
        )
    if response.status_code >= 400:
        fail(_error_text(response), code=1)
    return response.json()


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if isinstance(body, dict) and "error" in body:
        return f"{body['error']} (HTTP {response.status_code})"
    return f"HTTP {response.status_code}: {json.dumps(body)[:500]}"


# -- output ------------------------------------------------------------------------------------


def _show(body: Any, as_json: bool, table: Any) -> None:
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        Console(highlight=False).print(table())


def _jobs_table(statuses: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("name", "state", "processor", "in", "out", "rec/s", "late", "dlq", "error"):
        table.add_column(column, justify="right" if column in ("in", "out", "rec/s") else "left")
    for s in statuses:
        table.add_row(
            s["name"],
            s["state"],
            f"{s['processor_version']} x{s['num_partitions']}",
            f"{s['records_in']:,}",
            f"{s['records_out']:,}",
            f"{s['records_per_second']:,.0f}",
            f"{s['late_records']:,}",
            f"{s['dead_lettered']:,}",
            (s["last_error"] or "")[:60],
        )
    return table


_STATUS_FIELDS = (
    "name",
    "state",
    "processor",
    "processor_version",
    "num_partitions",
    "records_in",
    "records_out",
    "records_per_second",
    "watermark",
    "late_records",
    "dead_lettered",
    "failed_batches",
    "retries",
    "failure_strategy",
    "last_error",
    "started_at",
    "finished_at",
    "switches",
    "restored",
    "sql",
)


def _status_table(status: dict[str, Any]) -> Table:
    table = Table(show_header=False, title=f"job {status['name']}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field in _STATUS_FIELDS:
        value = status.get(field)
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        table.add_row(field, "-" if value is None else str(value))
    for field, value in (status.get("kafka") or {}).items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        table.add_row(f"kafka {field.replace('_', ' ')}", str(value))
    return table
