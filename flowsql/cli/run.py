"""``flowsql run``, ``demo``, ``explain`` and ``validate``.

A statement whose source is ``'<src>.type'='kafka_source'`` runs as a Kafka job
(``flowsql.runtime.kafka_job``: checkpoints, offsets committed after the sink
flushed, exactly-once when WITH asks for it) until its bounded input ends
(``'<src>.bounded'='latest'``) or Ctrl-C/SIGTERM, which stop it cleanly with a
final checkpoint (exit 0).

Exit codes: 0 success; 1 the job failed while running; 2 the job could not start
(bad SQL, a missing input, a bad option, an unreachable broker) — in that case
nothing is written — or ``validate`` found errors.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowsql.cli.errors import fail
from flowsql.connectors.dlq import JsonlDeadLetters
from flowsql.connectors.files import FileSink, FileSource
from flowsql.connectors.generator import make_generator
from flowsql.connectors.memory import MemorySink
from flowsql.connectors.paths import check_sink_path
from flowsql.connectors.registry import sink_for, sink_stream, sources_for
from flowsql.connectors.stdout import TableSink
from flowsql.errors import FlowSQLError, did_you_mean
from flowsql.plan import options
from flowsql.plan.explain import explain as explain_statement
from flowsql.plan.nodes import Statement
from flowsql.records import DeadLetter
from flowsql.redaction import (
    redact_error,
    register_secrets,
    secret_values,
    values_in_text,
)
from flowsql.runtime.factory import V1, ProcessorChoice, ProcessorFactory, factory, planned_for
from flowsql.runtime.kafka_job import KafkaJob, KafkaJobSpec
from flowsql.runtime.kafka_spec import is_kafka_job
from flowsql.runtime.runner import bind_sources, run_job
from flowsql.sql import parse, parse_one
from flowsql.sql import validate as validate_text

if TYPE_CHECKING:
    from flowsql.connectors.base import Sink, Source
    from flowsql.runtime.processor import JobProcessor

DEMO_SQL = (
    "SELECT symbol, COUNT(*) AS count, AVG(price) AS avg_price\n"
    "FROM trades\n"
    "GROUP BY symbol\n"
    "WINDOW TUMBLING(1s)"
)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
#: Dead letters echoed on stderr when no --dlq file is given.
_ECHO_LETTERS = 5


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``flowsql`` app."""
    app.command("run")(run)
    app.command("demo")(demo)
    app.command("explain")(explain)
    app.command("validate")(validate)


def _read_sql(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"SQL file not found: {file}")
    except OSError as exc:
        fail(f"cannot read SQL file {file}: {exc}")


def _parse(text: str) -> list[Statement]:
    try:
        statements = parse(text, annotations=True)  # the checks of 'validate'
    except FlowSQLError as exc:
        fail(redact_error(exc, values_in_text(text)))
    if not statements:
        fail("the SQL file holds no statement")
    for statement in statements:  # so that errors and logs mask them from now on
        register_secrets(secret_values(statement.properties))
    return statements


# ------------------------------------------------------------------------------- run


def run(
    file: Annotated[Path, typer.Argument(help="SQL file (one or more ;-separated statements).")],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="Bind a FROM name to a file: NAME=PATH (repeatable). A bare PATH binds"
            " the only FROM name. Also NAME=generator[:records=N,...].",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Result file (.jsonl/.ndjson, .csv, .parquet); '-' = JSON lines on stdout.",
        ),
    ] = None,
    dlq: Annotated[
        Path | None, typer.Option("--dlq", help="Dead-letter file (JSON lines) for bad records.")
    ] = None,
    event_time: Annotated[
        str | None,
        typer.Option("--event-time", help="Event-time column (epoch ms, timestamp or ISO)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows per micro-batch.")
    ] = 10_000,
    processor: Annotated[
        str | None, typer.Option("--processor", help="v1 (single thread) or v2 (partitioned).")
    ] = None,
    partitions: Annotated[
        int | None, typer.Option("--partitions", min=1, help="Partitions for v2.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary on stderr.")] = False,
) -> None:
    """Run SQL over bounded inputs to completion; Kafka jobs until their bounded
    input ends or Ctrl-C/SIGTERM (a clean stop with a final checkpoint)."""
    statements = _parse(_read_sql(file))
    bound = _bind_inputs(statements, inputs or [])
    letters = _dead_letter_sink(dlq, statements)
    choice = _Choice(processor, partitions, event_time)
    kafka = [_is_kafka(s, bound) for s in statements]
    plain = [s for s, k in zip(statements, kafka, strict=True) if not k]
    last_plain = not kafka[-1]
    jobs = _prepare(
        plain, bound, output if last_plain else None, letters, batch_size, file.parent, choice
    )
    kafka_jobs = _prepare_kafka(
        [s for s, k in zip(statements, kafka, strict=True) if k],
        None if last_plain else output,
        letters,
        choice,
        jobs,
    )
    _check_files(file, jobs, kafka_jobs, letters, output, dlq)
    plain_iter, kafka_iter = iter(jobs), iter(kafka_jobs)
    with _cleanup_on_signals(jobs, kafka_jobs, letters):
        for is_kafka in kafka:
            if is_kafka:
                line = _run_kafka(next(kafka_iter), jobs, kafka_jobs, letters)
            else:
                line = _run_plain(next(plain_iter), batch_size, jobs, kafka_jobs, letters)
            if not quiet:
                typer.echo(line, err=True)
    letters.close()
    _echo_letters(letters, dlq)


def _run_plain(
    job: _Job,
    batch_size: int,
    jobs: list[_Job],
    kafka_jobs: list[KafkaJob],
    letters: _Letters,
) -> str:
    try:
        report = run_job(
            job.statement, job.sources, job.sink, processor=job.processor, batch_size=batch_size
        )
    except FlowSQLError as exc:
        _abort_all(jobs, kafka_jobs)
        letters.close()
        fail(f"job '{job.statement.name}' failed: {exc}", code=1)
    return report.summary()


# ----------------------------------------------------------------------- Kafka jobs


def _is_kafka(statement: Statement, bound: Mapping[str, str]) -> bool:
    """A Kafka job, unless ``--input`` rebinds its source to a file."""
    return is_kafka_job(statement) and not any(s in bound for s in statement.sources)


def _prepare_kafka(
    statements: list[Statement],
    output: str | None,
    letters: _Letters,
    choice: _Choice,
    jobs: list[_Job],
) -> list[KafkaJob]:
    """Build every Kafka job (clients, topics checked) before anything runs. Its output
    is its ``kafka_sink``, else ``--output`` (last statement) or the console."""
    built: list[KafkaJob] = []
    for i, statement in enumerate(statements):
        try:
            spec = KafkaJobSpec.from_statement(statement)
            last = i == len(statements) - 1
            sink = None
            if spec.output is None:
                console = Console(highlight=False)
                sink = sink_for(statement, output if last else None, console=console)
            factory = _processor_factory(statement, choice)
            built.append(
                KafkaJob(statement, sink=sink, processor_factory=factory, dead_letters=letters)
            )
        except Exception as exc:  # bad config, unreachable broker, missing topic
            _abort_all(jobs, built)
            fail(f"job '{statement.name}': {_kafka_problem(exc, statement)}")
    return built


def _run_kafka(
    job: KafkaJob, jobs: list[_Job], kafka_jobs: list[KafkaJob], letters: _Letters
) -> str:
    """Run one Kafka job to the end of its bounded input, or until SIGINT/SIGTERM."""
    started = time.perf_counter()
    try:
        with _stop_on_signals(job):
            stats = job.run()
    except Exception as exc:
        _abort_all(jobs, kafka_jobs)
        letters.close()
        fail(f"job '{job.spec.job}' failed: {_kafka_problem(exc, job.statement)}", code=1)
    elapsed = time.perf_counter() - started
    if job.spec.output is None:
        job.sink.close()  # a file or the console: KafkaJob flushed it at every checkpoint
    processor = f"{job.label[1]} x{job.label[2]}" if job.label else "no partition assigned"
    ended = "input ended" if job.input_ended else "stopped"
    return (
        f"{job.spec.job}: {stats.records_in:,} records in, {stats.records_out:,} out,"
        f" {stats.late_records:,} late, {stats.dead_lettered:,} dead-lettered in {elapsed:.2f}s"
        f" ({stats.records_in / elapsed if elapsed > 0 else 0:,.0f} rec/s, {processor});"
        f" {stats.checkpoints:,} checkpoints, group {job.spec.group_id}, {ended}"
    )


@contextmanager
def _stop_on_signals(job: KafkaJob) -> Iterator[None]:
    """Ctrl-C and SIGTERM ask the job to stop at the next batch (final checkpoint)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: job.stop()) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _kafka_problem(exc: Exception, statement: Statement) -> str:
    """A one-line reason; a Kafka client error names the bootstrap servers."""
    if isinstance(exc, FlowSQLError):
        return str(exc)
    if type(exc).__module__.startswith(("confluent_kafka", "cimpl")):
        props = statement.properties
        streams = options.stream_names(statement)
        declared = (options.get(props, options.KAFKA_BOOTSTRAP, s) for s in streams)
        servers = next(filter(None, declared), None) or options.get(
            props, options.BOOTSTRAP_SERVERS
        )
        return f"Kafka error with broker {servers or '?'}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _bind_inputs(statements: list[Statement], specs: list[str]) -> dict[str, str]:
    """``--input`` values as FROM name -> path; unknown names fail with a hint."""
    names = list(dict.fromkeys(name for s in statements for name in s.sources))
    bound: dict[str, str] = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq or not _NAME_RE.match(name):
            if len(names) != 1:
                fail(
                    f"--input {spec!r}: say which FROM name it binds (NAME=PATH); names: {', '.join(names)}"
                )
            name, path = names[0], spec
        if name not in names:
            hint = did_you_mean(name, names)
            fail(
                f"--input {name}=...: no FROM name '{name}' in the SQL"
                + (f"; {hint}" if hint else "")
            )
        bound[name] = path
    return bound


@dataclass
class _Choice:
    """The processor the CLI asked for."""

    processor: str | None
    partitions: int | None
    event_time: str | None


@dataclass
class _Job:
    """One statement, ready to run."""

    statement: Statement
    sources: dict[str, Source]
    sink: Sink
    processor: JobProcessor


def _prepare(
    statements: list[Statement],
    inputs: Mapping[str, str],
    output: str | None,
    letters: _Letters,
    batch_size: int,
    base_dir: Path,
    choice: _Choice,
) -> list[_Job]:
    """Open every input, build every processor and sink before anything runs, so
    a bad query or input fails with nothing written. ``--output`` belongs to the
    last statement."""
    jobs: list[_Job] = []
    stdout = Console(highlight=False)
    for i, statement in enumerate(statements):
        try:
            sources = sources_for(
                statement, inputs, dead_letters=letters, batch_size=batch_size, base_dir=base_dir
            )
            statement = bind_sources(statement, sources)
            last = i == len(statements) - 1
            sink = sink_for(statement, output if last else None, console=stdout)
            try:
                statement = planned_for(statement, sink)  # a Kafka sink wants event times
                processor = _processor_factory(statement, choice)(statement, letters)
            except BaseException:
                sink.abort()
                raise
            jobs.append(_Job(statement, sources, sink, processor))
        except (FlowSQLError, OSError) as exc:
            _abort_all(jobs)
            fail(str(exc))
    return jobs


#: Sources that know their columns before the job runs (a Kafka source learns them
#: from its messages).
def _processor_factory(statement: Statement, choice: _Choice) -> ProcessorFactory:
    """V1 or V2 per ``--processor``, else the ``-- @job_mode`` annotation, else V1."""
    mode = (choice.processor or statement.annotations.get("job_mode") or "v1").lower()
    if mode not in ("v1", "v2"):
        fail(f"invalid value {mode!r} for --processor: allowed v1, v2")
    count = choice.partitions or _int_annotation(statement, "num_partitions")
    if mode == "v1":
        return factory(V1, event_time=choice.event_time)
    v2 = ProcessorChoice("v2", count or os.cpu_count() or 1)
    return factory(v2, event_time=choice.event_time)


def _int_annotation(statement: Statement, key: str) -> int | None:
    value = statement.annotations.get(key)
    if value is None:
        return None
    try:
        return max(1, int(value))
    except ValueError:
        fail(f"invalid value {value!r} for '-- @{key}': allowed a positive integer")


class _Letters:
    """The CLI's dead-letter sink: to the --dlq file if given, and kept (a few) for
    echoing on stderr otherwise."""

    def __init__(self, file: JsonlDeadLetters | None) -> None:
        self.file = file
        self.count = 0
        self.sample: list[DeadLetter] = []

    def write(self, letters: list[DeadLetter]) -> None:
        self.count += len(letters)
        room = _ECHO_LETTERS - len(self.sample)
        if room > 0:
            self.sample.extend(letters[:room])
        if self.file is not None:
            self.file.write(letters)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _dead_letter_sink(dlq: Path | None, statements: list[Statement]) -> _Letters:
    path = dlq or next(
        (Path(p) for s in statements if (p := options.get(s.properties, options.DLQ_PATH))),
        None,
    )
    if path is None:
        return _Letters(None)
    label = "--dlq" if dlq is not None else "'dlq.path'"
    try:
        check_sink_path(path, key=label)
    except FlowSQLError as exc:
        fail(str(exc))
    problem = _output_problem(label, path)
    if problem:
        fail(problem)
    return _Letters(JsonlDeadLetters(path))


# --------------------------------------------------------- files written by a run
#
# Checked before anything runs (exit 2): an output or dead-letter file must not
# be an input (it would be truncated while being read) nor another output, and
# its directory must exist and be writable. A run stopped by SIGINT or SIGTERM
# deletes its sinks' temporary files and exits 128 + the signal number.


def _check_files(
    sql_file: Path,
    jobs: list[_Job],
    kafka_jobs: list[KafkaJob],
    letters: _Letters,
    output: str | None,
    dlq: Path | None,
) -> None:
    written = _written_files(jobs, kafka_jobs, letters, output, dlq)
    read = [("the SQL file", sql_file)] + [
        (f"input '{name}'", source.path)
        for job in jobs
        for name, source in job.sources.items()
        if isinstance(source, FileSource)
    ]
    problems = [_output_problem(label, path) for label, path in written]
    for i, (label, path) in enumerate(written):
        for other, other_path in read + written[:i]:
            if _same_file(path, other_path):
                same = f"{path}" if path == other_path else f"{path} and {other_path}"
                problems.append(
                    f"{label} and {other} are the same file ({same}): writing it would"
                    " destroy it; choose another output file"
                )
    problem = next((p for p in problems if p), None)
    if problem:
        _abort_all(jobs, kafka_jobs)
        fail(problem)


def _written_files(
    jobs: list[_Job],
    kafka_jobs: list[KafkaJob],
    letters: _Letters,
    output: str | None,
    dlq: Path | None,
) -> list[tuple[str, Path]]:
    """(what, path) of every file a run writes: file sinks and the dead-letter file."""
    sinks = [(job.statement, job.sink) for job in jobs]
    sinks += [(kafka.statement, kafka.sink) for kafka in kafka_jobs]
    written = []
    for statement, sink in sinks:
        if isinstance(sink, FileSink):
            is_output = output is not None and Path(output) == sink.path
            label = "--output" if is_output else f"'{sink_stream(statement)}.path'"
            written.append((label, sink.path))
    if letters.file is not None:
        written.append(("--dlq" if dlq is not None else "'dlq.path'", letters.file.path))
    return written


def _output_problem(label: str, path: Path) -> str | None:
    """Why ``path`` cannot be written, or None."""
    directory = path.parent
    if not directory.is_dir():
        return f"{label}: output directory does not exist: {directory}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{label}: output directory is not writable: {directory}"
    if path.is_dir():
        return f"{label} names a directory: {path}"
    return None


def _same_file(a: Path, b: Path) -> bool:
    """The same file by resolved path, or by device and inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        first, second = a.stat(), b.stat()
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


class _Signalled(BaseException):
    """SIGINT or SIGTERM arrived (a BaseException, so no ``except Exception`` eats it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _cleanup_on_signals(
    jobs: list[_Job], kafka_jobs: list[KafkaJob], letters: _Letters
) -> Iterator[None]:
    """SIGINT/SIGTERM stop the run: sinks discard their temporary files, workers
    stop, and the command exits 130/143 (Kafka jobs stop cleanly instead: see
    :func:`_stop_on_signals`, which takes the signals over while one runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: object) -> None:
        for sig in signals:  # a second signal must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        raise _Signalled(signum)

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    except _Signalled as stop:
        _abort_all(jobs, kafka_jobs)
        letters.close()
        fail(f"interrupted by {stop}; unfinished output removed", code=128 + stop.signum)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _echo_letters(letters: _Letters, dlq: Path | None) -> None:
    if letters.file is not None or not letters.count:
        return
    for letter in letters.sample:
        where = f" at {letter.position}" if letter.position else ""
        typer.echo(f"dead letter{where}: {letter.error}: {str(letter.original)[:200]}", err=True)
    more = letters.count - len(letters.sample)
    tail = f" (and {more} more)" if more > 0 else ""
    typer.echo(
        f"{letters.count} record(s) dead-lettered{tail}; keep them with --dlq PATH", err=True
    )


def _abort_all(jobs: list[_Job], kafka_jobs: list[KafkaJob] | None = None) -> None:
    """Close every processor and discard every sink's partial output; close the
    Kafka jobs' clients (their output is as far as their last checkpoint)."""
    for job in jobs:
        job.sink.abort()
        job.processor.close()
    for kafka in kafka_jobs or ():
        try:
            if kafka.spec.output is None:
                kafka.sink.abort()
            kafka.close()
        except Exception as exc:  # already closed, or the broker is gone
            typer.echo(f"warning: closing Kafka job '{kafka.spec.job}': {exc}", err=True)


# ------------------------------------------------------------------------------ demo


def demo(
    records: Annotated[
        int, typer.Option("--records", "-n", min=1, help="Trades to generate.")
    ] = 1_000_000,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows per micro-batch.")
    ] = 10_000,
    processor: Annotated[str, typer.Option("--processor", help="v1 or v2.")] = "v1",
    partitions: Annotated[int | None, typer.Option("--partitions", min=1)] = None,
) -> None:
    """Aggregate generated trades per symbol and second, with a progress bar."""
    console = Console(highlight=False)
    statement = parse_one(DEMO_SQL)
    console.print(f"[bold]flowsql demo[/bold]: {records:,} generated trades, 100 symbols\n")
    console.print(DEMO_SQL + "\n", markup=False)
    source = make_generator("trades", name="trades", records=records, batch_size=batch_size)
    sink = MemorySink()
    factory = _processor_factory(statement, _Choice(processor, partitions, None))
    columns = (TextColumn("trades"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("trades", total=records)
        report = run_job(
            statement,
            {"trades": source},
            sink,
            processor=factory,
            batch_size=batch_size,
            progress=lambda n: bar.update(task, completed=n),
        )
    sample = TableSink(console, max_rows=10, title="sample of the results", hint="")
    for batch in sink.batches:
        sample.write(batch)
    sample.close()
    console.print(
        f"[bold green]{report.records_per_s:,.0f} records/s[/bold green]"
        f" ({report.records_in:,} trades, {report.records_out:,} results, {report.elapsed_s:.2f}s,"
        f" {report.processor})",
        soft_wrap=True,
    )


# -------------------------------------------------------------------- explain/validate


def explain(
    file: Annotated[Path, typer.Argument(help="SQL file.")],
    event_time: Annotated[
        str | None,
        typer.Option("--event-time", help="Event-time column, as given to 'flowsql run'."),
    ] = None,
) -> None:
    """Print each statement's plan, event time and watermark, routing key and partitioning."""
    statements = _parse(_read_sql(file))
    for i, statement in enumerate(statements):
        if i:
            typer.echo("")
        typer.echo(explain_statement(statement, event_time))


def validate(
    file: Annotated[Path, typer.Argument(help="SQL file.")],
) -> None:
    """List every error of every statement, each as FILE:LINE:COLUMN: message;
    exit 2 if any (as 'flowsql run' would refuse to start)."""
    text = _read_sql(file)
    errors = validate_text(text)
    secrets = values_in_text(text)
    for err in errors:
        where = f"{err.line}:{err.column}"
        typer.echo(f"{file}:{where}: {redact_error(err, secrets)}", err=True)
    if errors:
        typer.echo(f"{len(errors)} error(s)", err=True)
        raise typer.Exit(2)
    typer.echo(f"{file}: OK")
