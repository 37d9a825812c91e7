"""ParallelRunPlugin: a "Parallel run" tab on the DAG run page of the Airflow UI (Airflow 3.1+).

Two of Airflow 3's plugin mechanisms: a FastAPI app mounted on the api-server at
``/parallelrun`` (``fastapi_apps``), and an external view with ``destination="dag_run"`` and a
``url_route`` (``external_views``), which the UI shows as a tab of each DAG run, the app's page
in an iframe, ``{DAG_ID}`` and ``{RUN_ID}`` filled in by the UI. An external view needs no
JavaScript bundle built against the UI's React, so one wheel serves Airflow 3.1 to 3.3.

Airflow loads plugins in every process that uses them, task processes included (for macros and
extra links): importing this module stays cheap, and the app, with its FastAPI and api-server
imports, is built on its first request (``LazyApp``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

URL_PREFIX = "/parallelrun"
#: The tab's route under each DAG run page: ``/dags/<dag>/runs/<run>/plugin/parallel-run``.
URL_ROUTE = "parallel-run"


class LazyApp:
    """An ASGI app that builds the real one (``factory()``) on its first request."""

    def __init__(self, factory: Callable[[], ASGIApp]) -> None:
        self.factory = factory
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = self.factory()
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        # What Airflow's plugin listing (GET /api/v2/plugins, `airflow plugins`) shows of the app.
        return "airflow_parallelrun.plugins.app:create_app"


def _create_app() -> ASGIApp:
    from airflow_parallelrun.plugins.app import create_app

    return create_app()


class ParallelRunPlugin(AirflowPlugin):
    """Show each parallel run of a DAG run while it runs (progress, rate, ETA) and its report after."""

    name = "parallelrun"
    fastapi_apps = [{"app": LazyApp(_create_app), "url_prefix": URL_PREFIX, "name": "Parallel run view"}]
    external_views = [
        {
            "name": "Parallel run",
            "href": URL_PREFIX + "/dags/{DAG_ID}/runs/{RUN_ID}",
            "destination": "dag_run",
            "url_route": URL_ROUTE,
        }
    ]
