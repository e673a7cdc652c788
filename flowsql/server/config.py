"""Server configuration: YAML file, ``FLOWSQL_…`` environment overrides, per-job
annotations.

Precedence, lowest first: built-in defaults, the YAML file, environment
variables, and for one job its ``-- @job_mode`` / ``-- @num_partitions``
annotations. Every key is validated when the server starts; a wrong value
raises :class:`~flowsql.errors.ConfigError` naming the key path (for example
``server.processor_architecture``), the value and what is allowed.

Environment variables map onto key paths with ``__`` between levels:
``FLOWSQL_SERVER__PROCESSOR_ARCHITECTURE=v2`` sets
``server.processor_architecture``, ``FLOWSQL_SERVER__V2_CONFIG__NUM_PARTITIONS=4``
sets ``server.v2_config.num_partitions``. List values are JSON
(``["/data", "/tmp"]``) or separated by ``os.pathsep``.
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flowsql.errors import ConfigError
from flowsql.plan.nodes import Statement
from flowsql.redaction import is_secret_key as is_secret_key  # the API's error handler uses it
from flowsql.redaction import (
    redact_error,
    redact_properties,
    redact_text,
    register_secrets,
    secret_values,
    values_in_text,
)
from flowsql.runtime.factory import ProcessorChoice as ProcessorChoice  # settings build choices

ENV_PREFIX = "FLOWSQL_"
ENV_SEPARATOR = "__"
#: Environment variable holding the API token (never read from the YAML file).
TOKEN_ENV = "FLOWSQL_API_TOKEN"
#: Shortest API token accepted.
MIN_TOKEN_CHARS = 16
#: Header that marks an API request as sent by a program, not a web page: a browser
#: sends it cross-origin only after a CORS preflight, which the server never grants.
CLIENT_HEADER = "X-FlowSQL-Request"

ProcessorVersion = Literal["v1", "v2"]
PROCESSOR_VERSIONS: tuple[str, ...] = ("v1", "v2")
#: Host names that mean this machine; ``localhost`` is the only name (never resolved).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def cpu_count() -> int:
    """CPUs this process may run on (the default V2 partition count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class V2Settings(_Strict):
    """``server.v2_config``: the partitioned (V2) processor."""

    num_partitions: int = Field(default_factory=cpu_count, ge=1, le=1024)


class ServerSettings(_Strict):
    """``server``: the job server."""

    processor_architecture: ProcessorVersion = "v1"
    v2_config: V2Settings = Field(default_factory=V2Settings)
    batch_size: int = Field(default=10_000, ge=1, le=10_000_000)
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=0, le=65535)
    allowed_hosts: tuple[str, ...] = ()
    file_roots: tuple[Path, ...] = ()
    checkpoint_dir: Path | None = None
    stop_timeout_s: float = Field(default=10.0, gt=0)
    switch_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("processor_architecture", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("file_roots", "allowed_hosts", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @field_validator("allowed_hosts")
    @classmethod
    def _authorities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if parse_authority(entry) is None:
                raise ValueError(f"not a host or host:port: {entry!r}")
        return tuple(entry.strip().lower() for entry in value)

    @property
    def is_loopback(self) -> bool:
        """True when the API listens on this machine only."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for a loopback IP address (``127.0.0.0/8``, ``::1``) or the name ``localhost``.

    Other names are never resolved: ``127.attacker.example`` is not loopback.
    """
    name = host.strip().lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_authority(value: str) -> tuple[str, int | None] | None:
    """``"Host:8080"`` -> ``("host", 8080)``, ``"[::1]"`` -> ``("::1", None)``; None if malformed.

    The form of a ``Host`` header and of a ``server.allowed_hosts`` entry.
    """
    text = value.strip()
    if not text or any(c in text for c in "/\\?#@ \t"):
        return None
    try:
        parts = urlsplit(f"//{text}")
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    return (host, port) if host else None


def check_token(token: str | None) -> None:
    """Refuse an API token that is guessable or cannot be sent in a header.

    Raises:
        ConfigError: shorter than :data:`MIN_TOKEN_CHARS`, or not printable ASCII without spaces.
    """
    if token is None:
        return
    if len(token) < MIN_TOKEN_CHARS or not all("!" <= c <= "~" for c in token):
        raise ConfigError(TOKEN_ENV, f"a token of {len(token)} characters", ALLOWED[TOKEN_ENV])


class Settings(_Strict):
    """The whole configuration file."""

    server: ServerSettings = Field(default_factory=ServerSettings)


#: What each key accepts, for error messages.
ALLOWED: dict[str, str] = {
    "server.processor_architecture": "v1, v2",
    "server.v2_config.num_partitions": "an integer from 1 to 1024",
    "server.batch_size": "an integer from 1 to 10000000",
    "server.host": "an IP address or host name (non-loopback needs FLOWSQL_API_TOKEN)",
    "server.port": "an integer from 0 to 65535",
    "server.allowed_hosts": "a list of host names or host:port (the Host headers to accept)",
    "server.file_roots": "a list of directories",
    "server.checkpoint_dir": "a directory path",
    "server.stop_timeout_s": "seconds > 0",
    "server.switch_timeout_s": "seconds > 0",
    TOKEN_ENV: f"at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces",
}


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the YAML file (optional), apply environment overrides, validate.

    Args:
        path: YAML file; None = defaults only.
        environ: environment to read ``FLOWSQL_…`` overrides from (default ``os.environ``).
        overrides: nested values applied last (CLI flags), e.g. ``{"server": {"port": 0}}``.

    Raises:
        ConfigError: a missing/unreadable file, an unknown key or a wrong value.
    """
    data = _read_yaml(Path(path)) if path is not None else {}
    data = _merge(data, env_overrides(os.environ if environ is None else environ))
    data = _merge(data, dict(overrides or {}))
    return validate_settings(data)


def validate_settings(data: Mapping[str, Any]) -> Settings:
    """Validate a nested mapping; the first problem becomes a :class:`ConfigError`."""
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise _config_error(exc) from None


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``FLOWSQL_SERVER__V2_CONFIG__NUM_PARTITIONS=4`` -> ``{"server": {"v2_config": {...}}}``.

    Only variables with ``__`` after the prefix are config keys, so
    ``FLOWSQL_API_TOKEN`` and other plain ``FLOWSQL_`` variables are not.
    """
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split(ENV_SEPARATOR)
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = _env_value(keys[-1], raw)
    return out


#: List-valued keys and the separator of their plain (not JSON) environment form.
_LIST_SEPARATORS = {"file_roots": os.pathsep, "allowed_hosts": ","}


def _env_value(key: str, raw: str) -> Any:
    separator = _LIST_SEPARATORS.get(key)
    if separator is None:
        return raw
    if raw.strip().startswith("["):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(f"server.{key}", raw, ALLOWED[f"server.{key}"]) from None
    return [part for part in raw.split(separator) if part]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), exc.strerror or str(exc), "a readable YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), _yaml_problem(exc), "valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), type(data).__name__, "a mapping with a 'server' section")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(exc, 'problem', None) or exc}{where}"


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        return ConfigError(key, error.get("input"), _known_keys(loc[:-1]))
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return ConfigError(key or "<root>", error.get("input"), "a mapping of " + _known_keys(loc))
    return ConfigError(key, error.get("input"), ALLOWED.get(key, error["msg"]))


def _known_keys(loc: list[str]) -> str:
    model: type[BaseModel] = Settings
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return "known keys: " + ", ".join(model.model_fields)


def default_choice(server: ServerSettings) -> ProcessorChoice:
    """The server default: ``processor_architecture`` and ``v2_config.num_partitions``."""
    return ProcessorChoice(server.processor_architecture, server.v2_config.num_partitions)


def parse_choice(
    version: str | None, partitions: int | str | None, default: ProcessorChoice, *, where: str
) -> ProcessorChoice:
    """Validate a processor version and partition count given by a user.

    Args:
        version: "v1"/"v2" (any case) or None to keep ``default.version``.
        partitions: a positive count, or None to keep ``default.num_partitions``.
        default: what is not given.
        where: key prefix used in errors, e.g. ``"totals.@"`` for a job's annotations.
    """
    chosen = default.version if version is None else str(version).strip().lower()
    if chosen not in PROCESSOR_VERSIONS:
        raise ConfigError(f"{where}job_mode", version, PROCESSOR_VERSIONS)
    count = default.num_partitions if partitions is None else _positive(partitions, where)
    return ProcessorChoice(chosen, count)


def _positive(value: int | str, where: str) -> int:
    try:
        count = int(str(value).strip())
    except ValueError:
        count = 0
    if not 1 <= count <= 1024:
        raise ConfigError(f"{where}num_partitions", value, "an integer from 1 to 1024")
    return count


def job_choice(statement: Statement, default: ProcessorChoice) -> ProcessorChoice:
    """The processor for one job: its ``-- @job_mode`` / ``-- @num_partitions``
    annotations win over the server default.

    ``@num_partitions`` without ``@job_mode`` asks for V2 with that many partitions.
    """
    notes = {key.lower(): value for key, value in statement.annotations.items()}
    mode = notes.get("job_mode")
    if mode is None and "num_partitions" in notes:
        mode = "v2"
    return parse_choice(mode, notes.get("num_partitions"), default, where=f"{statement.name}.@")


# -- Security: secrets and file roots (DESIGN §8) --------------------------------------

_GLOB_CHARS = frozenset("*?[")


class Redactor:
    """Masks the secrets of a job wherever the job is shown (status, errors, logs).

    The rule (which keys are secret, how values are found in text) is
    :mod:`flowsql.redaction`'s; a redactor adds the values of one job and
    registers them process-wide, so that logs mask them too.

    Args:
        properties: the job's WITH properties.
        values: more secret values (those written in SQL that did not parse).
    """

    def __init__(
        self, properties: Mapping[str, str] | None = None, *, values: tuple[str, ...] = ()
    ) -> None:
        self._values = secret_values(properties or {}) + values
        register_secrets(self._values)

    @classmethod
    def from_sql(cls, sql: str) -> Redactor:
        """A redactor for the secret values written in SQL text that may not parse."""
        return cls(values=values_in_text(sql))

    def properties(self, properties: Mapping[str, str]) -> dict[str, str]:
        """A copy with the values of secret keys replaced by ``****``."""
        return redact_properties(properties, self._values)

    def text(self, text: str | None) -> str | None:
        """``text`` without secrets (None stays None)."""
        return None if text is None else redact_text(text, self._values)

    def sql(self, sql: str) -> str:
        """SQL text with the values of secret keys masked, also unterminated ones."""
        return redact_text(sql, self._values)

    def error(self, error: BaseException) -> str:
        """The message of ``error`` without secrets (see :func:`~flowsql.redaction.redact_error`)."""
        return redact_error(error, self._values)


class FileAccessError(ConfigError):
    """A file path outside ``server.file_roots`` (the API answers 403)."""

    def __init__(self, key: str, path: str, roots: tuple[Path, ...]) -> None:
        allowed = (
            "a path under " + ", ".join(str(r) for r in roots)
            if roots
            else "no file paths: server.file_roots is empty (set it to allow file access)"
        )
        super().__init__(key, path, allowed)
        self.path = path


class FileRoots:
    """The directories that file sources and sinks deployed through the API may use.

    Paths are resolved (``~``, ``..``, symlinks) before the check, and a glob is
    checked both as written and for every file it matches. This check runs at
    deploy; file sources and sinks get :attr:`roots` and check again each time
    they open a file, without following a symlink planted after this check
    (:mod:`flowsql.connectors.paths`).
    """

    def __init__(self, roots: tuple[Path, ...] | list[Path]) -> None:
        self.roots = tuple(Path(root).expanduser().resolve() for root in roots)

    def check(self, path: str | Path, *, key: str = "path") -> Path:
        """Return the resolved path.

        Raises:
            FileAccessError: the path, or a file its glob matches, is outside every root.
        """
        text = str(path)
        if "://" in text and not text.startswith("file://"):
            raise FileAccessError(key, text, self.roots)
        text = text.removeprefix("file://")
        resolved = Path(text).expanduser().resolve()
        if not self._inside(resolved):
            raise FileAccessError(key, text, self.roots)
        if _GLOB_CHARS & set(text):
            for match in glob.glob(str(Path(text).expanduser()), recursive=True):
                if not self._inside(Path(match).resolve()):
                    raise FileAccessError(key, match, self.roots)
        return resolved

    def _inside(self, resolved: Path) -> bool:
        return any(resolved == root or resolved.is_relative_to(root) for root in self.roots)
