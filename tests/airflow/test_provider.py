"""The package is an Airflow provider: its metadata passes Airflow's schema and the CLI lists it."""

from __future__ import annotations

import json
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
