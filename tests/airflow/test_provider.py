"""The package is an Airflow provider: its metadata passes Airflow's schema and the CLI lists it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.resources import files

import jsonschema
import pytest

from airflow_parallelrun.get_provider_info import get_provider_info

pytestmark = pytest.mark.airflow


def test_provider_info_passes_airflows_schema() -> None:
    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


@pytest.mark.slow
def test_airflow_providers_list_shows_the_provider(airflow_db: None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    providers = {p["package_name"]: p for p in json.loads(result.stdout)}
    assert "airflow-provider-parallelrun" in providers
    from airflow_parallelrun import __version__

    assert providers["airflow-provider-parallelrun"]["version"] == __version__


def test_provider_info_names_modules_that_hold_the_operator_sensor_and_trigger() -> None:
    import importlib

    info = get_provider_info()
    expected = {
        "operators": ["ParallelRunOperator"],
        "sensors": ["NewFilesSensor"],
        "triggers": ["NewFilesTrigger"],
        "hooks": ["ParallelRunStorageHook", "ParallelRunSqlHook"],
    }
    for kind, classes in expected.items():
        (entry,) = info[kind]
        modules = entry["python-modules"]
        assert len(modules) == len(classes), (kind, modules)
        for module, cls in zip(modules, classes, strict=True):
            assert hasattr(importlib.import_module(module), cls), (kind, module)


def test_the_plugin_is_declared_both_ways_airflow_finds_provider_plugins() -> None:
    """The provider metadata and the ``airflow.plugins`` entry point name the same plugin class.

    Airflow reads the metadata's ``plugins`` only with ``lazy_discover_providers`` off (its default
    is on); the entry point is read in every configuration.
    """
    import tomllib
    from pathlib import Path

    from airflow_parallelrun.plugins.parallel_run_plugin import ParallelRunPlugin

    (plugin,) = get_provider_info()["plugins"]
    module, _, name = plugin["plugin-class"].rpartition(".")
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    entry_point = pyproject["project"]["entry-points"]["airflow.plugins"][plugin["name"]]
    assert entry_point == f"{module}:{name}"
    assert plugin["name"] == ParallelRunPlugin.name
    assert f"{ParallelRunPlugin.__module__}.{ParallelRunPlugin.__qualname__}" == plugin["plugin-class"]


def test_the_plugin_adds_a_tab_to_the_dag_run_page_served_by_its_own_app() -> None:
    from airflow.plugins_manager import AirflowPlugin

    from airflow_parallelrun.plugins.parallel_run_plugin import URL_PREFIX, ParallelRunPlugin

    assert issubclass(ParallelRunPlugin, AirflowPlugin)
    ParallelRunPlugin.validate()
    (app,) = ParallelRunPlugin.fastapi_apps
    (view,) = ParallelRunPlugin.external_views
    assert app["url_prefix"] == URL_PREFIX
    assert view["destination"] == "dag_run" and view["url_route"]  # a tab, the page in an iframe
    assert view["href"] == URL_PREFIX + "/dags/{DAG_ID}/runs/{RUN_ID}"


@pytest.mark.slow
def test_airflow_loads_the_plugin_from_the_provider_metadata(airflow_db: None) -> None:
    """``airflow plugins`` (what the api-server loads) lists the plugin, its app and its view."""
    env = {**os.environ, "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False"}
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "plugins", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        env=env,
    )
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert "parallelrun" in plugins, result.stdout[:2000]
    shown = json.dumps(plugins["parallelrun"])
    assert "/parallelrun" in shown and "dag_run" in shown
