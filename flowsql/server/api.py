"""The job server's REST API (FastAPI), and ``serve`` to run it with uvicorn.

=========================================  =============================================
``GET /health``                            liveness and jobs per state (no token needed)
``GET /metrics``                           Prometheus metrics of every job
``POST /jobs``                             deploy SQL (``text/plain`` or ``{"sql": ...}``)
``GET /jobs``                              every job's status
``GET /jobs/{name}``                       one job's status
``DELETE /jobs/{name}``                    stop the job and forget it
``POST /jobs/{name}/pause`` / ``resume``   pause or resume at a batch boundary
``PUT /jobs/{name}/processor``             switch V1/V2 (``{"processor", "num_partitions"}``)
``GET /jobs/{name}/output``                last rows of a job that declares no sink
``GET /jobs/{name}/dead_letters``          its most recent dead letters
``GET /config`` / ``PUT /config/processor``  the server default processor
=========================================  =============================================

Security (DESIGN §8): :class:`RequestGuard` checks every request before the app
sees it, so a refused request changes nothing: the ``Host`` must be this server
(DNS rebinding), a web page of another origin is refused, with a token every
request but ``/health`` needs ``Authorization: Bearer <token>``, a request that
changes something must carry ``Content-Type: application/json`` or
``X-FlowSQL-Request: 1`` (which no HTML form or "simple" cross-origin request can
send), and a body over :data:`MAX_SQL_BYTES` is refused while it streams in.
``serve`` refuses to listen on a non-loopback address without a token, and a
token shorter than 16 characters.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowsql.errors import ConfigError, ExecutionError, FlowSQLError, PlanError, SqlSyntaxError
from flowsql.server import metrics
from flowsql.server.config import (
    CLIENT_HEADER,
    LOOPBACK_HOSTS,
    TOKEN_ENV,
    FileAccessError,
    Redactor,
    ServerSettings,
    check_token,
    is_loopback,
    is_secret_key,
    parse_authority,
)
from flowsql.server.jobserver import JobConflictError, StreamJobServer, UnknownJobError

log = logging.getLogger(__name__)

#: Largest request body accepted (the SQL of ``POST /jobs``).
MAX_SQL_BYTES = 1 << 20
#: Paths served without the API token.
OPEN_PATHS = frozenset({"/health"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: ``Sec-Fetch-Site`` values of a request that no other site's page started.
OWN_FETCH_SITES = frozenset({"same-origin", "none"})
DEFAULT_PORTS = {"http": 80, "https": 443}


class ProcessorRequest(BaseModel):
    """Body of ``PUT /jobs/{name}/processor`` and ``PUT /config/processor``."""

    model_config = ConfigDict(extra="forbid")

    processor: str | None = Field(default=None, description="v1 or v2")
    num_partitions: int | None = Field(default=None, description="V2 partitions (>= 1)")


def create_app(server: StreamJobServer, *, token: str | None = None) -> FastAPI:
    """The FastAPI app serving ``server``.

    Args:
        server: the job server; shut down with the app.
        token: API token; when set every request but ``/health`` must carry it.

    Raises:
        ConfigError: a token shorter than 16 characters.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        server.shutdown()

    check_token(token)
    app = FastAPI(title="flowsql job server", lifespan=lifespan)
    app.state.server = server
    app.state.registry = metrics.server_registry(server)
    app.add_middleware(RequestGuard, settings=server.settings, token=token)
    _add_error_handlers(app)
    _add_routes(app, server)
    return app


# -- security ------------------------------------------------------------------------------


class RequestGuard:
    """Pure ASGI middleware: the checks every request passes before the app sees it.

    In this order; the first that fails answers, closes the connection and
    nothing else runs:

    1. ``Host`` names this server (else 421, DNS rebinding): the bound host or the
       local address of the connection — or any loopback name when either is
       loopback — on the listening port, or an entry of ``server.allowed_hosts``.
    2. No web page of another origin started it (else 403): ``Origin``, when sent,
       is the server's own, and ``Sec-Fetch-Site``, when sent, is ``same-origin``
       or ``none``.
    3. With a token, every path but ``/health`` carries ``Authorization: Bearer
       <token>`` (else 401).
    4. POST, PUT, PATCH and DELETE carry ``Content-Type: application/json`` or
       ``X-FlowSQL-Request: 1`` (else 403), which no form can send.
    5. A body over :data:`MAX_SQL_BYTES` is refused with 413 from its
       ``Content-Length``, or as soon as the bytes received pass the limit:
       never buffered.

    Args:
        app: the app behind the guard.
        settings: the server's host, port and ``allowed_hosts``.
        token: the API token, if any.
    """

    def __init__(self, app: ASGIApp, *, settings: ServerSettings, token: str | None) -> None:
        self.app = app
        self.settings = settings
        self.bearer = f"Bearer {token}".encode() if token else None
        self.allowed = [a for e in settings.allowed_hosts if (a := parse_authority(e)) is not None]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope, Headers(scope=scope))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._limit_body(scope, receive, send)

    def refusal(self, scope: Scope, headers: Headers) -> Response | None:
        """The answer to a request refused by checks 1-4 or by its ``Content-Length``."""
        host = parse_authority(headers.get("host", ""))
        if host is None or not self._names_this_server(host, scope):
            return _refused(
                421,
                f"Host {headers.get('host', '')!r} is not this server (DNS rebinding?);"
                " add it to server.allowed_hosts if clients use that name",
            )
        cross = _cross_origin(headers, host)
        if cross is not None:
            return _refused(403, f"cross-origin request refused ({cross})")
        if not self._authorized(scope, headers):
            return _refused(
                401,
                "missing or wrong API token (Authorization: Bearer <token>)",
                {"WWW-Authenticate": "Bearer"},
            )
        if scope["method"] in STATE_CHANGING and not _from_a_program(headers):
            return _refused(
                403,
                f"{scope['method']} needs Content-Type: application/json"
                f" or the header {CLIENT_HEADER}: 1",
            )
        return _too_large(headers.get("content-length"))

    def _names_this_server(self, host: tuple[str, int | None], scope: Scope) -> bool:
        name, port = host
        port = DEFAULT_PORTS.get(scope.get("scheme", "http"), 80) if port is None else port
        local_host, local_port = _local_address(scope, self.settings)
        names = {local_host.lower(), self.settings.host.lower()} - {"0.0.0.0", "::"}
        if is_loopback(local_host) or self.settings.is_loopback:
            names |= LOOPBACK_HOSTS
        if name in names and port == local_port:
            return True
        return (name, None) in self.allowed or (name, port) in self.allowed

    def _authorized(self, scope: Scope, headers: Headers) -> bool:
        if self.bearer is None or scope["path"] in OPEN_PATHS:
            return True
        given = headers.get("authorization", "").encode("latin-1")
        return secrets.compare_digest(given, self.bearer)

    async def _limit_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; answer 413 and stop reading once the body passes the limit."""
        received = 0
        refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_SQL_BYTES and not refused:
                refused = True
                await _too_large_answer()(scope, receive, send)
                raise _BodyTooLarge
            return message

        async def send_unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        with suppress(_BodyTooLarge):
            await self.app(scope, counted_receive, send_unless_refused)


class _BodyTooLarge(Exception):
    """Unwinds the app once the 413 answer is sent."""


def _local_address(scope: Scope, settings: ServerSettings) -> tuple[str, int]:
    """The address the connection reached (the real port when bound to port 0)."""
    server = scope.get("server")
    if server and server[1] is not None:
        return str(server[0]), int(server[1])
    return settings.host, settings.port


def _cross_origin(headers: Headers, host: tuple[str, int | None]) -> str | None:
    """Why a web page of another origin sent the request, or None."""
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in OWN_FETCH_SITES:
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("origin")
    if origin is not None and not _is_origin_of(origin, host):
        return f"Origin: {origin}"
    return None


def _is_origin_of(origin: str, host: tuple[str, int | None]) -> bool:
    """True when ``origin`` (``scheme://host[:port]``) is the one the ``Host`` names."""
    parts = urlsplit(origin.strip().lower())
    try:
        port = parts.port
    except ValueError:
        return False
    default = DEFAULT_PORTS.get(parts.scheme)
    if default is None or not parts.hostname or parts.path or parts.username:
        return False
    name, host_port = host
    same_port = (default if port is None else port) == (default if host_port is None else host_port)
    return parts.hostname.rstrip(".") == name and same_port


def _from_a_program(headers: Headers) -> bool:
    return headers.get(CLIENT_HEADER) == "1" or _is_json(headers)


def _is_json(headers: Headers) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


def _too_large(content_length: str | None) -> Response | None:
    if content_length is None:
        return None
    if content_length.strip().isdigit() and int(content_length) <= MAX_SQL_BYTES:
        return None
    return _too_large_answer()


def _too_large_answer() -> Response:
    return _refused(413, f"request body over {MAX_SQL_BYTES} bytes (the largest SQL accepted)")


def _refused(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON refusal that also closes the connection, so an unread body is never read."""
    return JSONResponse(
        {"error": error}, status_code=status, headers={"Connection": "close", **(headers or {})}
    )


def check_binding(settings: ServerSettings, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token, and a weak token.

    Raises:
        ConfigError: ``server.host`` is not a loopback address and no token is set,
            or the token is shorter than 16 characters.
    """
    check_token(token)
    if not settings.is_loopback and not token:
        raise ConfigError(
            "server.host",
            settings.host,
            f"127.0.0.1, localhost or ::1; set {TOKEN_ENV} to listen on other addresses",
        )


# -- errors --------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FlowSQLError, _flowsql_error)  # type: ignore[arg-type]


def _status_code(exc: FlowSQLError) -> int:
    if isinstance(exc, FileAccessError):
        return 403
    if isinstance(exc, UnknownJobError):
        return 404
    if isinstance(exc, JobConflictError | ExecutionError):
        return 409
    return 400


def _flowsql_error(request: Request, exc: FlowSQLError) -> JSONResponse:
    redactor: Redactor = getattr(request.state, "redactor", None) or Redactor()
    body: dict[str, Any] = {"error": redactor.error(exc)}
    if isinstance(exc, SqlSyntaxError | PlanError):
        body.update(line=exc.line, column=exc.column, hint=redactor.text(exc.hint) or None)
    if isinstance(exc, ConfigError):
        value = "****" if is_secret_key(exc.key) else redactor.text(str(exc.value))
        body.update(key=exc.key, value=value, allowed=redactor.text(exc.allowed))
    return JSONResponse(body, status_code=_status_code(exc))


# -- routes --------------------------------------------------------------------------------


def _add_routes(app: FastAPI, server: StreamJobServer) -> None:
    _add_service_routes(app, server)
    _add_job_routes(app, server)
    _add_control_routes(app, server)


def _add_service_routes(app: FastAPI, server: StreamJobServer) -> None:
    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "jobs": server.counts()}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(app.state.registry), media_type=metrics.CONTENT_TYPE)

    @app.get("/config")
    def config() -> dict[str, Any]:
        settings = server.settings.model_dump(mode="json")
        return {"server": settings, "default_processor": asdict(server.default_choice)}

    @app.put("/config/processor")
    def set_default(body: ProcessorRequest) -> dict[str, Any]:
        choice = server.set_default_processor(body.processor, body.num_partitions)
        return {"default_processor": asdict(choice)}


def _add_job_routes(app: FastAPI, server: StreamJobServer) -> None:
    @app.post("/jobs", status_code=201)
    async def deploy(request: Request) -> dict[str, Any]:
        sql = await _sql_body(request)
        request.state.redactor = Redactor.from_sql(sql)
        restore = _flag(request, "restore", default=True)
        statuses = await run_in_threadpool(partial(server.deploy, sql, restore=restore))
        return {"jobs": [s.to_dict() for s in statuses]}

    @app.get("/jobs")
    def list_jobs() -> dict[str, Any]:
        return {"jobs": [s.to_dict() for s in server.jobs()]}

    @app.get("/jobs/{name}")
    def status(name: str) -> dict[str, Any]:
        return server.status(name).to_dict()

    @app.delete("/jobs/{name}")
    def stop(name: str) -> dict[str, Any]:
        return server.stop(name, forget=True).to_dict()

    @app.get("/jobs/{name}/output")
    def output(name: str, limit: int = 100) -> Response:
        rows = server.output(name, max(1, limit))
        if rows is None:
            raise JobConflictError(f"job '{name}' writes to the sink declared in its WITH")
        return _json({"rows": rows})

    @app.get("/jobs/{name}/dead_letters")
    def dead_letters(name: str) -> Response:
        letters = [asdict(letter) for letter in server.dead_letters(name)]
        return _json({"dead_letters": letters})


def _add_control_routes(app: FastAPI, server: StreamJobServer) -> None:
    @app.post("/jobs/{name}/pause")
    def pause(name: str) -> dict[str, Any]:
        return server.pause(name).to_dict()

    @app.post("/jobs/{name}/resume")
    def resume(name: str) -> dict[str, Any]:
        return server.resume(name).to_dict()

    @app.put("/jobs/{name}/processor")
    def switch(name: str, body: ProcessorRequest) -> dict[str, Any]:
        return server.switch_processor(name, body.processor, body.num_partitions).to_dict()


def _flag(request: Request, name: str, *, default: bool) -> bool:
    """A true/false query parameter (``?restore=false``)."""
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise ConfigError(name, value, "true or false")
    return value.lower() == "true"


async def _sql_body(request: Request) -> str:
    """SQL text, or the ``sql`` of a JSON body (:class:`RequestGuard` bounds its size)."""
    text = (await request.body()).decode("utf-8", errors="replace")
    if not _is_json(request.headers):
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("body", f"invalid JSON ({exc.msg})", '{"sql": "..."}') from None
    sql = data.get("sql") if isinstance(data, dict) else None
    if not isinstance(sql, str):
        raise ConfigError("sql", type(sql).__name__, 'a string: {"sql": "CREATE STREAM ..."}')
    return sql


def _json(data: Any) -> Response:
    """JSON with exact decimals as strings and other odd values as text."""
    return Response(json.dumps(data, default=_plain), media_type="application/json")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


# -- running -------------------------------------------------------------------------------


def serve(settings: ServerSettings, *, token: str | None = None, log_level: str = "info") -> None:
    """Run the job server until interrupted.

    Raises:
        ConfigError: a non-loopback host without a token.
    """
    check_binding(settings, token)
    server = StreamJobServer(settings)
    app = create_app(server, token=token)
    log.info(
        "flowsql job server on %s:%d (default processor %s)",
        settings.host,
        settings.port,
        server.default_choice.label,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level)
