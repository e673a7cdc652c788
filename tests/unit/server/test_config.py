"""Server configuration: YAML, environment overrides, annotations, security helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowsql.errors import ConfigError
from flowsql.plan.nodes import Scan, Statement
from flowsql.runtime.failures import FailurePolicy, FailureStrategy, duration_ms
from flowsql.server.config import (
    FileAccessError,
    FileRoots,
    ProcessorChoice,
    Redactor,
    ServerSettings,
    cpu_count,
    env_overrides,
    job_choice,
    load_settings,
    validate_settings,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flowsql.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    server = load_settings(None, environ={}).server
    assert server.processor_architecture == "v1"
    assert server.v2_config.num_partitions == cpu_count()
    assert server.batch_size == 10_000
    assert (server.host, server.port) == ("127.0.0.1", 8080)
    assert server.file_roots == ()
    assert server.is_loopback


def test_yaml_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server:\n  processor_architecture: V2\n  v2_config:\n    num_partitions: 8\n"
        "  batch_size: 500\n  file_roots: [/data]\n",
    )
    server = load_settings(path, environ={}).server
    assert server.processor_architecture == "v2"
    assert server.v2_config.num_partitions == 8
    assert server.batch_size == 500
    assert server.file_roots == (Path("/data"),)


def test_bad_processor_names_key_value_and_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  processor_architecture: v3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    err = info.value
    assert err.key == "server.processor_architecture"
    assert err.value == "v3"
    assert "v1, v2" in str(err)
    assert "server.processor_architecture" in str(err) and "'v3'" in str(err)


@pytest.mark.parametrize(
    ("data", "key", "value"),
    [
        ({"server": {"v2_config": {"num_partitions": 0}}}, "server.v2_config.num_partitions", 0),
        ({"server": {"batch_size": "lots"}}, "server.batch_size", "lots"),
        ({"server": {"port": 70000}}, "server.port", 70000),
    ],
)
def test_bad_numbers(data: dict, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings(data)
    assert (info.value.key, info.value.value) == (key, value)
    assert info.value.allowed


def test_unknown_keys_are_rejected_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings({"server": {"procesor_architecture": "v2"}})
    assert info.value.key == "server.procesor_architecture"
    assert "processor_architecture" in info.value.allowed
    with pytest.raises(ConfigError) as info:
        validate_settings({"server": {"v2_config": {"partitions": 2}}})
    assert info.value.key == "server.v2_config.partitions"
    assert "num_partitions" in info.value.allowed
    with pytest.raises(ConfigError) as info:
        validate_settings({"servers": {}})
    assert info.value.key == "servers"


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 3, column 7"):
        load_settings(write(tmp_path, "server:\n  port: 1\n   bad: [\n"), environ={})
    with pytest.raises(ConfigError, match="readable"):
        load_settings(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  processor_architecture: v1\n  port: 9000\n")
    environ = {
        "FLOWSQL_SERVER__PROCESSOR_ARCHITECTURE": "v2",
        "FLOWSQL_SERVER__V2_CONFIG__NUM_PARTITIONS": "3",
        "FLOWSQL_SERVER__FILE_ROOTS": os.pathsep.join(["/a", "/b"]),
        "FLOWSQL_API_TOKEN": "not-a-config-key",
        "FLOWSQL_OTHER": "ignored",
    }
    server = load_settings(path, environ=environ).server
    assert server.processor_architecture == "v2"
    assert server.v2_config.num_partitions == 3
    assert server.port == 9000
    assert server.file_roots == (Path("/a"), Path("/b"))


def test_environment_json_list_and_bad_values() -> None:
    assert env_overrides({"FLOWSQL_SERVER__FILE_ROOTS": '["/x", "/y"]'}) == {
        "server": {"file_roots": ["/x", "/y"]}
    }
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"FLOWSQL_SERVER__V2_CONFIG__NUM_PARTITIONS": "many"})
    assert info.value.key == "server.v2_config.num_partitions"
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"FLOWSQL_SERVER__COLOUR": "blue"})
    assert info.value.key == "server.colour"


def test_overrides_win_over_environment() -> None:
    settings = load_settings(
        None,
        environ={"FLOWSQL_SERVER__PORT": "9000"},
        overrides={"server": {"port": 9100}},
    )
    assert settings.server.port == 9100


def statement(annotations: dict[str, str], name: str = "job1") -> Statement:
    return Statement(Scan("trades"), kind="stream", name=name, annotations=annotations)


V1_DEFAULT = ProcessorChoice("v1", 4)


def test_annotations_win_over_the_server_default() -> None:
    assert job_choice(statement({}), V1_DEFAULT) == V1_DEFAULT
    assert job_choice(statement({"job_mode": "v2"}), V1_DEFAULT) == ProcessorChoice("v2", 4)
    both = statement({"job_mode": "V2", "num_partitions": "3"})
    assert job_choice(both, V1_DEFAULT) == ProcessorChoice("v2", 3)
    v2_default = ProcessorChoice("v2", 8)
    assert job_choice(statement({"job_mode": "v1"}), v2_default).version == "v1"


def test_num_partitions_alone_asks_for_v2() -> None:
    assert job_choice(statement({"num_partitions": "2"}), V1_DEFAULT) == ProcessorChoice("v2", 2)


@pytest.mark.parametrize(
    ("notes", "key", "value"),
    [
        ({"job_mode": "turbo"}, "job1.@job_mode", "turbo"),
        ({"job_mode": "v2", "num_partitions": "zero"}, "job1.@num_partitions", "zero"),
        ({"num_partitions": "0"}, "job1.@num_partitions", "0"),
    ],
)
def test_bad_annotations(notes: dict[str, str], key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        job_choice(statement(notes), V1_DEFAULT)
    assert (info.value.key, info.value.value) == (key, value)
    assert info.value.allowed


def test_failure_policy_from_with() -> None:
    assert FailurePolicy.from_properties({}).strategy is FailureStrategy.SEND_TO_DLQ
    policy = FailurePolicy.from_properties(
        {"failure_strategy": "RETRY_WITH_BACKOFF", "max_retries": "5", "retry_backoff": "2s"}
    )
    assert policy == FailurePolicy(FailureStrategy.RETRY_WITH_BACKOFF, 5, 2000)
    with pytest.raises(ConfigError) as info:
        FailurePolicy.from_properties({"failure_strategy": "ignore"}, "j")
    assert info.value.key == "j.failure_strategy"
    assert "log_and_continue" in info.value.allowed and "fail_batch" in info.value.allowed
    with pytest.raises(ConfigError, match="max_retries"):
        FailurePolicy.from_properties({"max_retries": "-1"})


@pytest.mark.parametrize(
    ("text", "ms"),
    [("250", 250), ("250ms", 250), ("2s", 2000), ("1.5 seconds", 1500), ("1m", 60_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert duration_ms(text, "k") == ms


def test_bad_duration() -> None:
    with pytest.raises(ConfigError, match="retry_backoff"):
        duration_ms("soon", "retry_backoff")


def test_redactor_masks_secret_values_everywhere() -> None:
    props = {"sasl.password": "hunter2", "api_token": "tok-123", "topic": "trades"}
    redact = Redactor(props)
    assert redact.properties(props) == {
        "sasl.password": "****",
        "api_token": "****",
        "topic": "trades",
    }
    sql = (
        "SELECT * FROM t WITH ('sasl.password' = 'hunter2', api_token='tok-123', 'topic'='trades')"
    )
    masked = redact.sql(sql)
    assert "hunter2" not in masked and "tok-123" not in masked and "'trades'" in masked
    assert redact.text("login failed for hunter2") == "login failed for ****"
    assert redact.text(None) is None


def test_file_roots_resolve_dotdot_and_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    outside = tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (outside / "passwd").write_text("x")
    (root / "link").symlink_to(outside)
    roots = FileRoots([root])
    assert roots.check(str(root / "in.jsonl")) == (root / "in.jsonl").resolve()
    for bad in (
        str(outside / "passwd"),
        str(root / ".." / "secret" / "passwd"),
        str(root / "link" / "passwd"),
        str(tmp_path / "data2" / "x"),  # a string prefix of the root, not inside it
        "s3://bucket/key",
    ):
        with pytest.raises(FileAccessError) as info:
            roots.check(bad, key="path")
        assert str(root) in info.value.allowed


def test_globs_are_checked_per_match(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.jsonl").write_text("{}")
    (tmp_path / "b.jsonl").write_text("{}")
    (root / "b.jsonl").symlink_to(tmp_path / "b.jsonl")
    roots = FileRoots([root])
    with pytest.raises(FileAccessError):
        roots.check(str(root / "*.jsonl"))
    roots.check(str(root / "a*.jsonl"))


def test_no_file_roots_refuses_every_path(tmp_path: Path) -> None:
    with pytest.raises(FileAccessError, match="file_roots is empty"):
        FileRoots([]).check(str(tmp_path / "x"))


REPO = Path(__file__).resolve().parents[3]


def test_example_yaml_is_valid_and_documented() -> None:
    settings = load_settings(REPO / "flowsql.example.yaml", environ={})
    assert settings.server.processor_architecture == "v1"
    docs = (REPO / "docs" / "configuration.md").read_text()
    for key in ServerSettings.model_fields:
        assert f"`{key}" in docs, key
        assert f"FLOWSQL_SERVER__{key.upper()}" in docs, key
