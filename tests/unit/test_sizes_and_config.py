"""Tests for core/sizes.py (mini_batch_size as Azure ML spells it) and core/config.py (ParallelRunConfig)."""

from __future__ import annotations

import json
import os

import pytest

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.sizes import MiniBatchSize, parse_mini_batch_size

# --- parse_mini_batch_size ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("10", MiniBatchSize("files", 10)),
        (10, MiniBatchSize("files", 10)),
        ("1", MiniBatchSize("files", 1)),
        (" 25 ", MiniBatchSize("files", 25)),
        ("7 files", MiniBatchSize("files", 7)),
        (None, MiniBatchSize("files", 10)),
    ],
)
def test_files_take_a_count(size, expected):
    assert parse_mini_batch_size(size, tabular=False) == expected


@pytest.mark.parametrize(
    ("size", "expected_bytes"),
    [
        ("1KB", 1024),
        ("500 KB", 500 * 1024),
        ("1MB", 1024**2),
        ("3mb", 3 * 1024**2),
        ("2GB", 2 * 1024**3),
        ("1024", 1024),
        (4096, 4096),
        ("1", 1),
        ("100B", 100),
        (None, 1024**2),
    ],
)
def test_tabular_bytes_use_powers_of_1024(size, expected_bytes):
    assert parse_mini_batch_size(size, tabular=True) == MiniBatchSize("bytes", expected_bytes)


@pytest.mark.parametrize(
    ("size", "rows"), [("2000 rows", 2000), ("2000rows", 2000), ("2000 ROWS", 2000), ("1 row", 1)]
)
def test_tabular_rows(size, rows):
    assert parse_mini_batch_size(size, tabular=True) == MiniBatchSize("rows", rows)


@pytest.mark.parametrize(
    ("size", "tabular"),
    [("0", False), (0, False), ("0 files", False), ("0", True), (0, True), ("0KB", True), ("0 rows", True)],
)
def test_zero_is_refused(size, tabular):
    with pytest.raises(ConfigError, match="must be at least 1") as info:
        parse_mini_batch_size(size, tabular=tabular)
    assert f"mini_batch_size={str(size)!r}" in str(info.value)
    assert "e.g. mini_batch_size=" in str(info.value)


@pytest.mark.parametrize(
    ("size", "tabular", "fragment"),
    [
        ("10XB", True, "unknown unit 'XB'"),
        ("10 TB", True, "unknown unit 'TB'"),
        ("10MB", False, "unknown unit 'MB'"),
        ("5 rows", False, "unknown unit 'rows'"),
        ("-1", False, "is not a size"),
        ("-1", True, "is not a size"),
        ("abc", False, "is not a size"),
        ("abc", True, "is not a size"),
        ("1.5MB", True, "is not a size"),
        ("", True, "is not a size"),
    ],
)
def test_bad_sizes_are_refused_with_the_value_and_an_example(size, tabular, fragment):
    with pytest.raises(ConfigError) as info:
        parse_mini_batch_size(size, tabular=tabular)
    message = str(info.value)
    assert fragment in message
    assert f"mini_batch_size={size!r}" in message
    assert "e.g. mini_batch_size=" in message


def test_a_rows_suffix_on_files_says_files_take_a_count():
    with pytest.raises(ConfigError) as info:
        parse_mini_batch_size("100 rows", tabular=False)
    assert "count of files" in str(info.value)
    assert 'mini_batch_size="10"' in str(info.value)


def test_tabular_errors_name_the_allowed_units():
    with pytest.raises(ConfigError) as info:
        parse_mini_batch_size("10XB", tabular=True)
    assert "KB, MB, GB or rows" in str(info.value)


# --- ParallelRunConfig: defaults ------------------------------------------------------------------


def test_defaults_equal_azure_ml():
    config = ParallelRunConfig(entry_script="score.py")
    assert config.batch_size(tabular=False) == MiniBatchSize("files", 10)
    assert config.batch_size(tabular=True) == MiniBatchSize("bytes", 1024 * 1024)
    assert config.run_invocation_timeout == 60
    assert config.run_max_try == 3
    assert config.output_action == "append_row"
    assert config.append_row_format == "text"
    assert config.output_file_name == "parallel_run_step.txt"
    assert config.logging_level == "INFO"
    assert config.warm_workers is True and config.worker_idle_timeout == 60
    assert config.node_count == 1
    assert config.allowed_failed_count is None
    assert config.allowed_failed_percent is None
    # None: the CPU count of each worker node where the pool starts; Airflow's bound on the run
    # tasks in flight takes the CPU count of the machine that parses the DAG.
    assert config.process_count_per_node is None
    assert config.concurrency == (os.cpu_count() or 1) >= 1


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("text", "parallel_run_step.txt"),
        ("csv", "parallel_run_step.csv"),
        ("parquet", "parallel_run_step.parquet"),
    ],
)
def test_default_file_name_follows_the_format(fmt, name):
    assert ParallelRunConfig(entry_script="s.py", append_row_format=fmt).output_file_name == name


def test_an_explicit_file_name_wins_over_the_format_default():
    config = ParallelRunConfig(
        entry_script="s.py", append_row_format="csv", append_row_file_name="scores.csv"
    )
    assert config.output_file_name == "scores.csv"


def test_mini_batch_size_is_kept_and_parsed_per_dataset_kind():
    config = ParallelRunConfig(entry_script="s.py", mini_batch_size="5")
    assert config.batch_size(tabular=False) == MiniBatchSize("files", 5)
    assert config.batch_size(tabular=True) == MiniBatchSize("bytes", 5)


def test_thresholds_and_concurrency():
    config = ParallelRunConfig(
        entry_script="s.py",
        error_threshold=-1,
        allowed_failed_count=2,
        allowed_failed_percent=12.5,
        node_count=3,
        process_count_per_node=4,
    )
    assert config.thresholds() == {
        "error_threshold": -1,
        "allowed_failed_count": 2,
        "allowed_failed_percent": 12.5,
    }
    assert config.concurrency == 12


@pytest.mark.parametrize(
    "kwargs",
    [
        {"error_threshold": -1},
        {"error_threshold": 0},
        {"allowed_failed_count": -1},
        {"allowed_failed_count": 0},
        {"allowed_failed_percent": -1},
        {"allowed_failed_percent": 0},
        {"allowed_failed_percent": 100},
        {"allowed_failed_percent": 2.5},
        {"output_action": "summary_only"},
        {"run_invocation_timeout": 0.5},
        {"run_max_try": 1},
        {"logging_level": "debug"},
        {"logging_level": "WARNING"},
        {"mini_batch_size": "64KB"},
        {"mini_batch_size": "100 rows"},
        {"environment_variables": {"A": "1"}},
    ],
)
def test_valid_edge_values_are_accepted(kwargs):
    config = ParallelRunConfig(entry_script="s.py", **kwargs)
    for name, value in kwargs.items():
        assert getattr(config, name) == value


def test_config_is_frozen():
    config = ParallelRunConfig(entry_script="s.py")
    with pytest.raises(AttributeError):
        config.run_max_try = 5  # type: ignore[misc]


# --- ParallelRunConfig: every invalid value --------------------------------------------------------

INVALID = [
    # (field, bad value, a fragment that says what to do)
    ("output_action", "apend_row", "use 'append_row'"),
    ("output_action", "append_rows", "'summary_only'"),
    ("run_invocation_timeout", -5, "e.g. 60"),
    ("run_invocation_timeout", 0, "seconds > 0"),
    ("run_invocation_timeout", "60", "seconds > 0"),
    # NaN and infinity pass a "> 0" check but crash the worker's wait for run().
    ("run_invocation_timeout", float("nan"), "expected a finite number of seconds"),
    ("run_invocation_timeout", float("inf"), "expected a finite number of seconds"),
    ("run_max_try", 0, "give the number of tries in all"),
    ("run_max_try", -1, "give the number of tries in all"),
    ("run_max_try", 2.5, "expected a whole number"),
    ("error_threshold", -2, "or -1 to ignore"),
    ("error_threshold", 1.5, "expected a whole number"),
    ("allowed_failed_count", -2, "-1 or None to ignore"),
    ("allowed_failed_percent", 150, "from 0 to 100"),
    ("allowed_failed_percent", -0.5, "from 0 to 100"),
    ("allowed_failed_percent", "10%", "from 0 to 100"),
    ("append_row_format", "json", "use one of text, csv, parquet"),
    ("append_row_file_name", "out/parallel_run_step.txt", "without a folder"),
    ("append_row_file_name", "out\\result.txt", "without a folder"),
    ("append_row_file_name", "", "without a folder"),
    ("append_row_file_name", "..", "without a folder"),
    ("logging_level", "LOUD", "use DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ("logging_level", 20, "use DEBUG, INFO"),
    ("entry_script", "score.txt", "e.g. entry_script="),
    ("entry_script", "score", "must be the path of a Python file"),
    ("node_count", 0, "give the number of nodes"),
    ("process_count_per_node", 0, "give the number of processes per node"),
    ("mini_batch_size", "0", "for a FileDataset give a count of files"),
    ("mini_batch_size", "10XB", "for a TabularDataset give bytes"),
    # A bool is an int to Python, never to a user: refuse it where a number is expected.
    ("run_max_try", True, "expected a whole number"),
    ("error_threshold", False, "expected a whole number"),
    ("allowed_failed_count", True, "expected a whole number"),
    ("node_count", True, "expected a whole number"),
    ("process_count_per_node", True, "expected a whole number"),
    ("allowed_failed_percent", True, "from 0 to 100"),
    ("run_invocation_timeout", True, "seconds > 0"),
    ("warm_workers", "yes", "expected True"),
    ("worker_idle_timeout", 0, "seconds > 0 a warm worker waits"),
    ("worker_idle_timeout", float("inf"), "e.g. 60"),
    ("prefetch_mini_batches", -1, "0: fetch each when its turn comes"),
    ("prefetch_mini_batches", True, "expected a whole number >= 0"),
    ("prefetch_mini_batches", "1", "how many next mini-batches to fetch"),
    ("resource_monitor_interval", -1, "seconds > 0 between two samples"),
    ("resource_monitor_interval", float("nan"), "or 0 to take none"),
    ("resource_monitor_interval", False, "e.g. 10, or 0"),
    ("resource_monitor_interval", "10", "e.g. 10, or 0"),
]


@pytest.mark.parametrize(("field", "value", "fix"), INVALID, ids=[f"{f}={v!r}" for f, v, _ in INVALID])
def test_invalid_values_name_the_field_the_value_and_the_fix(field, value, fix):
    kwargs = {"entry_script": "s.py", field: value}
    with pytest.raises(ConfigError) as info:
        ParallelRunConfig(**kwargs)
    message = str(info.value)
    assert field in message
    assert repr(value) in message
    assert fix in message


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        ParallelRunConfig(entry_script="s.py", run_max_try=0)


# --- environment_variables: secrets never written where they are kept -----------------------------

SECRET = "s3cr3t-Q7xv9-value"


@pytest.mark.parametrize(
    ("env", "named", "fix"),
    [
        ({"A": 1}, "environment_variables['A']", "mapping of names to string values"),
        ({"API": SECRET.encode()}, "environment_variables['API']", "not a string"),
        ({1: SECRET}, "invalid name 1", "non-empty strings"),
        ({"A=B": SECRET}, "invalid name 'A=B'", "without '='"),
        ([("A", SECRET)], "environment_variables is of type list", "give a dict of names"),
    ],
)
def test_environment_errors_name_the_variable_never_its_value(env, named, fix):
    with pytest.raises(ConfigError) as info:
        ParallelRunConfig(entry_script="s.py", environment_variables=env)
    message = str(info.value)
    assert named in message
    assert fix in message
    assert SECRET not in message


@pytest.mark.parametrize("name", ["API_KEY", "DB_PASSWORD", "GithubToken", "AWS_SECRET_ACCESS_KEY", "passwd"])
def test_a_secret_written_in_the_dag_file_is_refused_with_the_way_to_take_it_from_a_connection(name):
    with pytest.raises(ConfigError) as info:
        ParallelRunConfig(entry_script="s.py", environment_variables={name: SECRET})
    message = str(info.value)
    assert f"environment_variables[{name!r}]" in message
    assert "{{ conn.my_api.password }}" in message
    assert "{{ var.value.my_api_key }}" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "env",
    [
        {"API_KEY": "{{ conn.my_api.password }}"},
        {"API_KEY": "{{ var.value.my_api_key }}"},
        {"API_KEY": "{% if true %}x{% endif %}"},
        {"API_KEY": "{{ 'not-a-secret' }}"},
        {"API_KEY": ""},
        {"GREETING": "hello", "MONKEY_NAME": "bob"},
    ],
)
def test_templates_empty_values_and_plain_names_are_accepted(env):
    assert ParallelRunConfig(entry_script="s.py", environment_variables=env).environment_variables == env


def test_repr_and_str_show_environment_variable_names_only():
    config = ParallelRunConfig(
        entry_script="s.py",
        environment_variables={"API_TOKEN": "{{ var.value.token }}", "GREETING": "hello-there"},
    )
    rendered = config.with_environment({"API_TOKEN": SECRET})
    for text in (repr(config), str(config), repr(rendered), str(rendered), f"{rendered}"):
        assert "API_TOKEN" in text and "GREETING" in text
        assert SECRET not in text and "hello-there" not in text and "var.value.token" not in text
    assert "entry_script='s.py'" in repr(rendered)


def test_with_environment_sets_rendered_values_and_keeps_literals():
    config = ParallelRunConfig(
        entry_script="s.py",
        environment_variables={"API_TOKEN": "{{ var.value.token }}", "GREETING": "hello"},
        error_threshold=3,
    )
    assert config.environment_templates == {"API_TOKEN": "{{ var.value.token }}"}
    rendered = config.with_environment({"API_TOKEN": SECRET})
    assert rendered.environment_variables == {"API_TOKEN": SECRET, "GREETING": "hello"}
    assert rendered.environment_templates == {}
    assert rendered.error_threshold == 3
    # The DAG's config is left as it was: every task renders its own copy.
    assert config.environment_variables["API_TOKEN"] == "{{ var.value.token }}"
    with pytest.raises(ConfigError, match=r"environment_variables\['API_TOKEN'\] is of type int"):
        config.with_environment({"API_TOKEN": 5})  # type: ignore[dict-item]


# --- ParallelRunConfig: resolved once, stored in the manifest header --------------------------------


def test_for_dataset_parses_the_size_once_and_keeps_it_on_the_config():
    config = ParallelRunConfig(entry_script="s.py", mini_batch_size="2 rows")
    resolved = config.for_dataset(tabular=True)
    assert resolved.mini_batch_size == MiniBatchSize("rows", 2)
    assert resolved.batch_size(tabular=True) is resolved.mini_batch_size
    assert resolved.for_dataset(tabular=True) is resolved
    with pytest.raises(ConfigError, match="mini_batch_size=2 rows does not fit a FileDataset"):
        resolved.batch_size(tabular=False)
    with pytest.raises(ConfigError, match="mini_batch_size='2 rows' has an unknown unit"):
        config.for_dataset(tabular=False)


def test_the_header_holds_the_resolved_config_and_environment_names_only():
    config = ParallelRunConfig(
        entry_script="s.py",
        mini_batch_size="64KB",
        error_threshold=-1,
        run_max_try=2,
        environment_variables={"API_TOKEN": "{{ conn.api.password }}", "MODEL": "iris"},
    ).for_dataset(tabular=True)
    header = config.to_header()
    text = json.dumps(header)  # JSON, as the manifest stores it
    assert "iris" not in text and "conn.api" not in text
    assert header["environment_variable_names"] == ["API_TOKEN", "MODEL"]
    assert header["mini_batch_size"] == {"unit": "bytes", "value": 65536}
    assert header["process_count_per_node"] is None  # each node decides: its own CPU count
    own = {"API_TOKEN": "{{ conn.api.password }}"}
    back = ParallelRunConfig.from_header(json.loads(text), environment_variables=own)
    assert back.mini_batch_size == MiniBatchSize("bytes", 65536)
    assert (back.error_threshold, back.run_max_try, back.process_count_per_node) == (-1, 2, None)
    assert back.environment_variables == own


def test_a_config_with_templates_left_is_not_stored():
    config = ParallelRunConfig(entry_script="s.py", run_max_try="{{ params.tries }}")
    with pytest.raises(ConfigError, match=r"still holds templates \['run_max_try'\]; render it first"):
        config.to_header()


def test_without_process_count_per_node_the_pool_takes_the_nodes_cpu_count(tmp_path):
    from airflow_parallelrun.core.execution.batch_runner import pool_spec_of
    from airflow_parallelrun.core.spec import RunSpec

    spec = RunSpec(
        output_path=str(tmp_path), config=ParallelRunConfig(entry_script="s.py"), entry_script="s.py"
    )
    pool = pool_spec_of(spec)
    assert pool is not None and pool.size == (os.cpu_count() or 1)
