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

Security (DESIGN §8): when a token is configured every request but ``/health``
needs ``Authorization: Bearer <token>``, checked before anything else runs, so
a refused request changes nothing. ``serve`` refuses to listen on a
non-loopback address without a token.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from flowsql.errors import ConfigError, ExecutionError, FlowSQLError, PlanError, SqlSyntaxError
from flowsql.server import metrics
from flowsql.server.config import (
    TOKEN_ENV,
    FileAccessError,
    Redactor,
    ServerSettings,
    is_secret_key,
)
from flowsql.server.jobserver import JobConflictError, StreamJobServer, UnknownJobError

log = logging.getLogger(__name__)

#: Largest SQL body accepted by ``POST /jobs``.
MAX_SQL_BYTES = 1 << 20
OPEN_PATHS = frozenset({"/health"})


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
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        server.shutdown()

    app = FastAPI(title="flowsql job server", lifespan=lifespan)
    app.state.server = server
    app.state.registry = metrics.server_registry(server)
    if token:
        app.middleware("http")(_bearer_check(token))
    _add_error_handlers(app)
    _add_routes(app, server)
    return app


# -- security ------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def _bearer_check(token: str) -> Callable[[Request, Handler], Awaitable[Response]]:
    expected = f"Bearer {token}".encode()

    async def check(request: Request, call_next: Handler) -> Response:
        if request.url.path in OPEN_PATHS:
            return await call_next(request)
        given = request.headers.get("authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            return JSONResponse(
                {"error": "missing or wrong API token (Authorization: Bearer <token>)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    return check


def check_binding(settings: ServerSettings, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token.

    Raises:
        ConfigError: ``server.host`` is not a loopback address and no token is set.
    """
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
    body: dict[str, Any] = {"error": redactor.text(_message(exc))}
    if isinstance(exc, SqlSyntaxError | PlanError):
        body.update(line=exc.line, column=exc.column, hint=exc.hint or None)
    if isinstance(exc, ConfigError):
        value = "****" if is_secret_key(exc.key) else redactor.text(str(exc.value))
        body.update(key=exc.key, value=value, allowed=exc.allowed)
    return JSONResponse(body, status_code=_status_code(exc))


def _message(exc: FlowSQLError) -> str:
    if isinstance(exc, ConfigError) and is_secret_key(exc.key):
        return f"invalid value for '{exc.key}': allowed {exc.allowed}"
    return str(exc)


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
        statuses = await run_in_threadpool(server.deploy, sql)
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


async def _sql_body(request: Request) -> str:
    raw = await request.body()
    if len(raw) > MAX_SQL_BYTES:
        raise ConfigError("body", f"{len(raw)} bytes", f"SQL up to {MAX_SQL_BYTES} bytes")
    text = raw.decode("utf-8", errors="replace")
    if "json" not in request.headers.get("content-type", ""):
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
    import uvicorn

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
