"""The example DAGs take the timetables from ``parallelrun_examples.timetables``, which parses on 3.1 too.

``make test-compat`` parses every example DAG on Airflow 3.1.8, where ``airflow.sdk`` has neither
``CronTriggerTimetable`` nor ``AssetOrTimeSchedule``; these tests keep the DAG files on the shim.
"""

from __future__ import annotations

import ast

import pytest

from tests.airflow.airflow_versions import sdk_has_timetables
from tests.conftest import DAGS

pytestmark = pytest.mark.airflow


def sdk_imports(source: str) -> set[str]:
    """Return the names a Python source imports from ``airflow.sdk``."""
    return {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module == "airflow.sdk"
        for alias in node.names
    }


def test_no_example_dag_imports_a_timetable_airflow_3_1_lacks_from_airflow_sdk() -> None:
    from parallelrun_examples import timetables

    shimmed = set(timetables.__all__)
    assert shimmed == {"AssetOrTimeSchedule", "CronTriggerTimetable"}
    found = {
        str(path.relative_to(DAGS)): sorted(sdk_imports(path.read_text()) & shimmed)
        for path in sorted(DAGS.rglob("*.py"))
        if path.name != "timetables.py"
    }
    assert {path: names for path, names in found.items() if names} == {}
    users = [path for path in found if "parallelrun_examples.timetables" in (DAGS / path).read_text()]
    assert users == ["parallelrun_asset_or_time.py", "parallelrun_nightly.py", "parallelrun_sql.py"]


def test_the_check_sees_an_import_from_airflow_sdk() -> None:
    source = "from airflow.sdk import DAG, CronTriggerTimetable, task\nfrom airflow.timetables import x\n"
    assert sdk_imports(source) == {"DAG", "CronTriggerTimetable", "task"}


def test_the_timetables_are_airflow_sdk_s_where_it_has_them_else_airflow_timetables() -> None:
    from parallelrun_examples import timetables

    if sdk_has_timetables():
        from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable
    else:  # Airflow 3.1
        from airflow.timetables.assets import AssetOrTimeSchedule
        from airflow.timetables.trigger import CronTriggerTimetable
    assert timetables.CronTriggerTimetable is CronTriggerTimetable
    assert timetables.AssetOrTimeSchedule is AssetOrTimeSchedule
