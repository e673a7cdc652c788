"""The one secret detector: which property keys hold credentials, and how their
values are masked in status, ``explain``, error messages and logs (DESIGN §8).

**Which keys are secret.** A key is lower-cased and split into segments on
``.``, ``_``, ``-``, ``/`` and spaces (``kafka.sasl.password`` -> ``kafka``,
``sasl``, ``password``). It is secret when

1. it contains, anywhere, one of :data:`SECRET_FRAGMENTS`: ``password``,
   ``passwd``, ``passphrase``, ``secret``, ``token``, ``credential``, ``jaas``,
   ``apikey``, ``privatekey``, ``accesskey`` (so ``clientSecret``, ``my.token``,
   ``apiKey`` count); or
2. one of its segments is one of :data:`SECRET_WORDS`: ``pwd``, ``pass``,
   ``sasl``, ``auth``, ``authorization``, ``bearer``, ``oauth``,
   ``oauthbearer``, ``private``, ``keystore``, ``cred``, ``creds``,
   ``userinfo`` (every ``sasl.*``, ``basic.auth.user.info``, ``ssl.keystore.*``);
   or
3. a ``key`` segment comes right after one of :data:`KEY_QUALIFIERS` (``access``,
   ``account``, ``api``, ``app``, ``client``, ``encryption``, ``license``,
   ``master``, ``secret``, ``service``, ``shared``, ``signing``, ``ssl``,
   ``subscription``: ``api.key``, ``api_key``, ``ssl.key.pem``,
   ``ssl.key.location``) and is not followed by one of :data:`KEY_STRUCTURE`
   (``column(s)``, ``field(s)``, ``format``, ``serializer``, ``deserializer``,
   ``type``).

So ``key.columns``, ``key.format``, ``partition.key``, ``api.key.columns``,
``ssl.certificate.pem``, ``ssl.truststore.location`` and ``bootstrap.servers``
stay visible: certificates are public, key material is not.

**How values are masked.** A secret is replaced by :data:`MASK` wherever it
shows up in text:

- ``<secret key> = <value>`` and ``<secret key>: <value>``, keys bare or quoted
  with ``'``, ``"`` or backticks, values quoted or bare, as written in SQL
  ``WITH`` clauses, JAAS configs (``password="x"``), dict reprs and JSON; a
  quoted value left unterminated is masked to the end of the text;
- the password of a URL (``https://user:****@host``) and PEM private-key blocks;
- every value of a secret key seen so far (:func:`register_secrets`; the job
  server registers the properties of every job it is given), so a traceback
  that prints only the raw value is masked too. Values shorter than
  :data:`MIN_SECRET_LENGTH` are masked only next to their key.

Syntax-error excerpts use :func:`redact_keeping_positions` (one ``*`` per
character, so the caret stays under the right column).
:func:`install_log_redaction` sends every log record, its traceback included,
and every uncaught thread exception through :func:`redact_text`.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from flowsql.errors import ConfigError

MASK = "****"
#: Substrings that make any key secret.
SECRET_FRAGMENTS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "jaas",
    "apikey",
    "privatekey",
    "accesskey",
)
#: Whole segments that make a key secret.
SECRET_WORDS = frozenset(
    {
        "pwd",
        "pass",
        "sasl",
        "auth",
        "authorization",
        "bearer",
        "oauth",
        "oauthbearer",
        "private",
        "keystore",
        "cred",
        "creds",
        "userinfo",
    }
)
#: A ``key`` segment right after one of these names key material (``api.key``, ``ssl.key.pem``).
KEY_QUALIFIERS = frozenset(
    {
        "access",
        "account",
        "api",
        "app",
        "client",
        "encryption",
        "license",
        "master",
        "secret",
        "service",
        "shared",
        "signing",
        "ssl",
        "subscription",
    }
)
#: ... unless one of these follows it: the key is then about message keys (``api.key.columns``).
KEY_STRUCTURE = frozenset(
    {"column", "columns", "field", "fields", "format", "serializer", "deserializer", "type"}
)
#: Registered values shorter than this are not searched for on their own.
MIN_SECRET_LENGTH = 4

_SEGMENTS = re.compile(r"[._\-/\s]+")
_KEY = (
    r"""'(?P<k1>[^'\n]{1,200})'|"(?P<k2>[^"\n]{1,200})"|`(?P<k3>[^`\n]{1,200})`"""
    r"""|(?<![\w.\-])(?P<k4>[A-Za-z_][\w.\-]{0,200})"""
)
# A quoted value may run to the end of the text (unterminated); '' and \' do not end it.
_VALUE = (
    r"""'(?P<sq>(?:''|\\.|[^'\\])*)(?:'|\Z)|"(?P<dq>(?:""|\\.|[^"\\])*)(?:"|\Z)"""
    r"""|(?P<bare>[^\s,;)}\]'"]+)"""
)
# ``key =`` / ``key:``; a quoted key right before a quoted value pairs up too
# (``'sasl.password' 'x'``, a missing ``=``). The value is read only after a
# secret key, and the search goes on after it: linear in the text.
_KEY_SEP = re.compile(rf"(?:{_KEY})(?:\s*(?P<sep>=>?|:)\s*|(?<=['\"`])\s*(?=['\"]))")
_VALUE_AT = re.compile(_VALUE, re.DOTALL)
_URL_PASSWORD = re.compile(
    r"(?<![\w+.\-])[A-Za-z][\w+.\-]{0,30}://[^\s:/@'\"]{1,256}:(?P<password>[^\s/@'\"]{1,256})@"
)
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True for property keys whose values must never be shown (see the module docs)."""
    lowered = key.strip().lower()
    if any(fragment in lowered for fragment in SECRET_FRAGMENTS):
        return True
    parts = [part for part in _SEGMENTS.split(lowered) if part]
    if any(part in SECRET_WORDS for part in parts):
        return True
    return any(
        part == "key"
        and i > 0
        and parts[i - 1] in KEY_QUALIFIERS
        and (i + 1 == len(parts) or parts[i + 1] not in KEY_STRUCTURE)
        for i, part in enumerate(parts)
    )


def secret_values(properties: Mapping[str, object]) -> tuple[str, ...]:
    """The values to search for in text: those of secret keys, the secrets inside them
    (the ``password="x"`` of a JAAS config) and URL passwords in any value."""
    found: set[str] = set()
    for key, raw in properties.items():
        value = str(raw)
        if is_secret_key(key):
            found.add(value)
            found.update(values_in_text(value))
        found.update(m.group("password") for m in _URL_PASSWORD.finditer(value))
    return tuple(value for value in found if value.strip())


def values_in_text(text: str) -> tuple[str, ...]:
    """The values written next to a secret key in ``text`` (SQL that may not parse)."""
    found: list[str] = []
    for start, end, quote in _secret_pairs(text):
        value = text[start:end]
        found.append(value.replace(quote * 2, quote) if quote else value)
    return tuple(found)


def redact_properties(
    properties: Mapping[str, object], values: Iterable[str] = ()
) -> dict[str, str]:
    """A copy with the values of secret keys replaced by :data:`MASK` and any
    other value passed through :func:`redact_text`."""
    shown = tuple(values)
    return {
        key: MASK if is_secret_key(key) else redact_text(str(value), shown)
        for key, value in properties.items()
    }


def redact_text(text: str, values: Iterable[str] = ()) -> str:
    """``text`` with every secret (see the module docs) replaced by :data:`MASK`.

    Args:
        text: any text: SQL, an error message, a formatted traceback.
        values: secret values to mask besides the registered ones.
    """
    out: list[str] = []
    last = 0
    for start, end in _spans(text, values):
        out += [text[last:start], MASK]
        last = end
    return "".join(out) + text[last:] if out else text


def redact_keeping_positions(text: str, values: Iterable[str] = ()) -> str:
    """Like :func:`redact_text` but each masked character becomes ``*`` (line
    breaks stay), so lines and columns in ``text`` still point at the same place:
    for syntax-error excerpts, whose caret marks a column."""
    chars = list(text)
    for start, end in _spans(text, values):
        for i in range(start, end):
            if chars[i] != "\n":
                chars[i] = "*"
    return "".join(chars)


def redact_error(error: BaseException, values: Iterable[str] = ()) -> str:
    """The message of ``error`` without secrets; a :class:`ConfigError` about a
    secret key does not show its value at all."""
    if isinstance(error, ConfigError) and is_secret_key(error.key):
        return redact_text(f"invalid value for '{error.key}': allowed {error.allowed}", values)
    return redact_text(str(error), values)


def _spans(text: str, values: Iterable[str]) -> list[tuple[int, int]]:
    """The sorted, merged ``[start, end)`` character ranges of every secret in ``text``."""
    spans = [(start, end) for start, end, _ in _secret_pairs(text) if start < end]
    spans += [m.span("password") for m in _URL_PASSWORD.finditer(text)]
    spans += [m.span() for m in _PRIVATE_KEY.finditer(text)]
    for value in {*values, *_REGISTRY.values}:
        if len(value) < MIN_SECRET_LENGTH:
            continue
        start = text.find(value)
        while start >= 0:
            spans.append((start, start + len(value)))
            start = text.find(value, start + len(value))
    return _merge(spans)


def _secret_pairs(text: str) -> Iterator[tuple[int, int, str]]:
    """``(start, end, quote)`` of every value written next to a secret key in ``text``."""
    pos = 0
    while (key := _KEY_SEP.search(text, pos)) is not None:
        pos = key.end()  # a value that is not a secret may hold a key/value pair itself
        name = key.group("k1") or key.group("k2") or key.group("k3") or key.group("k4")
        if not is_secret_key(name):
            continue
        value = _VALUE_AT.match(text, pos)
        if value is None:
            continue
        if value.group("bare") is not None and (
            key.group("sep") is None or (key.group("sep") == ":" and key.group("k4") is None)
        ):
            continue  # "for 'x.password': allowed ..." is prose, not a key/value pair
        for group, quote in (("sq", "'"), ("dq", '"'), ("bare", "")):
            if value.group(group) is not None:
                yield (*value.span(group), quote)
                break
        pos = value.end()


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


# -- the registry of secret values seen by this process ------------------------------------


class _Registry:
    """Every secret value registered so far (never forgotten: a stopped job's
    password must not show up in a later traceback either)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: frozenset[str] = frozenset()

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if len(v) >= MIN_SECRET_LENGTH}
        if new - self.values:
            with self._lock:
                self.values = self.values | new


_REGISTRY = _Registry()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values so that :func:`redact_text` masks them anywhere,
    logs included, in this process."""
    _REGISTRY.add(values)


# -- logs ---------------------------------------------------------------------------------

_FORMATTER = logging.Formatter()


def redact_record(record: logging.LogRecord) -> None:
    """Mask secrets in a log record's message, traceback and stack, in place.

    The traceback is formatted here (``record.exc_text``), so every formatter
    prints the masked text instead of formatting ``exc_info`` itself.
    """
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it when it is emitted
        return
    masked = redact_text(message)
    if masked != message:
        record.msg, record.args = masked, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact_text(_FORMATTER.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


class _RedactingFactory:
    """A log record factory that passes every record through :func:`redact_record`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        redact_record(record)
        return record


def install_log_redaction() -> None:
    """Mask secrets in every log record of this process, whatever logger or
    handler it goes to (uvicorn's included), and in uncaught thread exceptions,
    which are logged instead of printed. Calling it again changes nothing."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(factory))
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("flowsql").error(
        "uncaught %s in thread %s", args.exc_type.__name__, name, exc_info=args.exc_value
    )
