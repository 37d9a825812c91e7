"""The timetables the scheduled examples use, from ``airflow.sdk`` where it has them.

Airflow 3.2 added ``CronTriggerTimetable`` and ``AssetOrTimeSchedule`` to ``airflow.sdk``; on
Airflow 3.1 they are only in ``airflow.timetables``. The example DAGs import them from here so the
same DAG files parse on every supported Airflow (3.1 to 3.3).
"""

from __future__ import annotations

try:
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable
except ImportError:  # Airflow 3.1
    from airflow.timetables.assets import AssetOrTimeSchedule  # type: ignore[assignment]
    from airflow.timetables.trigger import CronTriggerTimetable  # type: ignore[assignment]

__all__ = ["AssetOrTimeSchedule", "CronTriggerTimetable"]
