"""The FastAPI app of the "Parallel run" view, mounted on the api-server at ``/parallelrun``.

Every route names a DAG run, and Airflow's own auth manager decides who may see it: the same
``requires_access_dag`` dependency as the REST API's DAG run routes (the JWT of the UI's session
cookie, or a bearer token). The routes are plain functions, so FastAPI runs their storage reads
in its thread pool instead of the api-server's event loop.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

#: Where the plugin's app is mounted on the api-server.
URL_PREFIX = "/parallelrun"
RUN_PATH = "/dags/{dag_id}/runs/{run_id}"
#: A report is a file from the run's storage, served from the UI's origin: its scripts (plots) run
#: in a sandbox of an origin of its own, so they cannot use the viewer's Airflow session.
REPORT_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts allow-popups",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _dag_run_reader() -> Any:
    """Return the dependency that lets through only a user who may read the DAG's runs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))


def _check_dag_run(dag_id: str, run_id: str) -> str:
    """Return the DAG run's state; a DAG run that does not exist answers 404."""
    from airflow_parallelrun.plugins.run_records import dag_run_state

    state = dag_run_state(dag_id, run_id)
    if state is None:
        raise HTTPException(
            status_code=404, detail=f"DAG run {run_id!r} of DAG {dag_id!r} not found; check both ids"
        )
    return state


def view_page() -> str:
    """Return the view's HTML: a page that polls the progress route and draws what it answers."""
    return resources.files("airflow_parallelrun.plugins").joinpath("view.html").read_text()


def create_app() -> FastAPI:
    """Build the app: the view page, its progress data, and each run's report."""
    from airflow_parallelrun.plugins.run_records import (
        describe_run,
        find_parallel_runs,
        read_report_html,
    )

    app = FastAPI(title="Parallel run view", docs_url=None, redoc_url=None, openapi_url=None)
    may_read = [_dag_run_reader()]

    @app.get(RUN_PATH, response_class=HTMLResponse, dependencies=may_read)
    def run_view(dag_id: str, run_id: str) -> HTMLResponse:
        _check_dag_run(dag_id, run_id)
        return HTMLResponse(view_page(), headers={"Cache-Control": "no-store"})

    @app.get(RUN_PATH + "/progress", dependencies=may_read)
    def run_progress(dag_id: str, run_id: str) -> dict[str, Any]:
        state = _check_dag_run(dag_id, run_id)
        runs = [describe_run(ref) for ref in find_parallel_runs(dag_id, run_id)]
        return {"dag_id": dag_id, "run_id": run_id, "dag_run_state": state, "runs": runs}

    @app.get(RUN_PATH + "/groups/{group_id}/report.html", dependencies=may_read)
    def run_report(dag_id: str, run_id: str, group_id: str) -> Response:
        _check_dag_run(dag_id, run_id)
        refs = [ref for ref in find_parallel_runs(dag_id, run_id) if ref.group_id == group_id]
        html = read_report_html(refs[0]) if refs else None
        if html is None:
            raise HTTPException(
                status_code=404,
                detail=f"no report.html of parallel run {group_id!r} in DAG run {run_id!r} of {dag_id!r} "
                "(yet): the aggregate task writes it when the run ends",
            )
        return Response(html, media_type="text/html", headers=REPORT_HEADERS)

    return app
