"""The "Parallel run" tab of the DAG run page, in a real browser against a real Airflow.

A real api-server, scheduler and dag-processor (LocalExecutor, SQLite) with login required run
two DAG runs of one ``ParallelRunOperator`` DAG side by side, over inputs of 6 and 4 mini-batches.
The entry script lets mini-batches 0 and 1 finish and holds the others until the test releases
them, so the view is seen mid-run for certain: headless Chromium logs in, opens each run's tab,
and reads 2 of 6 and 2 of 4 mini-batches done. Once released and finished, each tab shows what
that run's ``summary.json`` says. A user who may not read a DAG is refused the view's routes.
Screenshots go to ``tests/artefacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.airflow.real_airflow import RealAirflow
from tests.browser.run_view_airflow import ARTEFACTS, airflow_with_users, chromium_path, login

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(900)]

DAG_ID = "view_parallel_run"
#: A DAG the user "outsider" may not read (HiddenDagsAuthManager); "reader" may.
HIDDEN_DAG_ID = "view_hidden"
HIDDEN_DAG = f'from airflow.sdk import DAG\n\nwith DAG("{HIDDEN_DAG_ID}", schedule=None):\n    pass\n'
#: The run() calls of a DAG run after the first HELD_FROM wait for the release file: the view
#: sees each run mid-way, whichever mini-batches the executor starts first.
HELD_FROM = 2

ENTRY_SCRIPT = """\
import os
import time

RELEASE = os.environ["VIEW_TEST_RELEASE"]


def take_ticket(folder):
    # The n-th run() call of a DAG run creates ticket-n: one number per call, whatever the order.
    os.makedirs(folder, exist_ok=True)
    number = 0
    while True:
        try:
            os.close(os.open(os.path.join(folder, f"ticket-{{number}}"), os.O_CREAT | os.O_EXCL))
            return number
        except FileExistsError:
            number += 1


def run(mini_batch):
    tickets = RELEASE + "-tickets-" + os.path.basename(os.path.dirname(mini_batch[0]))
    held = take_ticket(tickets) >= {held_from}
    time.sleep(0.3)
    deadline = time.time() + 600
    while held and not os.path.exists(RELEASE) and time.time() < deadline:
        time.sleep(0.2)
    # The second item of each mini-batch fails: the view and the summary count them.
    return mini_batch[:1]
"""

DAG_SOURCE = """\
from airflow.sdk import DAG, Param
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None, catchup=False, params={{"folder": Param("a", type="string")}}):
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path={inputs!r} + "/{{{{ params.folder }}}}", pattern="*.txt"),
        output_path={output!r} + "/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script={script!r},
            mini_batch_size="2",
            error_threshold=-1,
            node_count=1,
            process_count_per_node=2,
            run_invocation_timeout=600,
            environment_variables={{"VIEW_TEST_RELEASE": {release!r}}},
        ),
    )
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAirflow]:
    yield from airflow_with_users(tmp_path_factory.mktemp("run-view-airflow"), {"outsider": [HIDDEN_DAG_ID]})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium; asked for before ``airflow``, so that a missing one skips at once."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def write_inputs(root: Path, folder: str, count: int) -> None:
    (root / folder).mkdir(parents=True)
    for i in range(count):
        (root / folder / f"item_{i:02d}.txt").write_text(f"{folder} {i}\n")


def view_url(airflow: RealAirflow, run_id: str) -> str:
    return f"{airflow.base_url}/dags/{DAG_ID}/runs/{run_id}/plugin/parallel-run"


def view_frame(page: Any) -> Any:
    """Return the iframe in which the UI shows the plugin's page."""
    page.wait_for_selector("iframe[title='Parallel run']", timeout=60_000)
    return page.frame_locator("iframe[title='Parallel run']")


def figure(frame: Any, key: str) -> str:
    return str(frame.locator(f"[data-testid='{key}']").first.inner_text())


def wait_for_text(frame: Any, key: str, pattern: str, timeout: float = 240) -> str:
    """Wait until the view's figure ``key`` matches ``pattern`` (the page refreshes itself); return it."""
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        locator = frame.locator(f"[data-testid='{key}']")
        if locator.count():
            shown = str(locator.first.inner_text())
            if re.search(pattern, shown):
                return shown
        time.sleep(0.5)
    raise AssertionError(f"the view's {key!r} never matched {pattern!r}; it last showed {shown!r}")


def test_the_view_shows_each_run_while_it_runs_and_its_summary_after(
    browser: Any, airflow: RealAirflow, tmp_path: Path
) -> None:
    inputs, output, release = tmp_path / "in", tmp_path / "out", tmp_path / "release"
    write_inputs(inputs, "a", 12)  # 6 mini-batches
    write_inputs(inputs, "b", 8)  # 4 mini-batches
    script = tmp_path / "held_entry.py"
    script.write_text(ENTRY_SCRIPT.format(held_from=HELD_FROM))
    source = DAG_SOURCE.format(
        dag_id=DAG_ID, inputs=str(inputs), output=str(output), script=str(script), release=str(release)
    )
    airflow.add_dag(DAG_ID, source)
    airflow.wait_for_dag(DAG_ID)
    runs = {
        "a": airflow.trigger(DAG_ID, conf={"folder": "a"}),
        "b": airflow.trigger(DAG_ID, conf={"folder": "b"}),
    }
    totals = {"a": 6, "b": 4}
    ARTEFACTS.mkdir(parents=True, exist_ok=True)

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        login(context.new_page(), airflow.base_url, "reader")
        pages = {}
        for folder, run_id in runs.items():
            page = context.new_page()
            page.goto(view_url(airflow, run_id))
            frame = view_frame(page)
            # Mid-run: the first HELD_FROM mini-batches done, the others held, so the run goes on.
            shown = wait_for_text(frame, "mini-batches", rf"^{HELD_FROM} of {totals[folder]} done$")
            assert figure(frame, "state") == "running", shown
            assert figure(frame, "items") == f"{2 * HELD_FROM} of {2 * totals[folder]} done"
            assert figure(frame, "failed") == f"0 mini-batches, {HELD_FROM} items"
            assert re.fullmatch(r"\d\d:\d\d:\d\d", figure(frame, "eta")), figure(frame, "eta")
            page.screenshot(path=str(ARTEFACTS / f"run-view-running-{folder}.png"), full_page=True)
            pages[folder] = (page, frame)

        release.write_text("go")
        for run_id in runs.values():
            assert airflow.wait_for_run(DAG_ID, run_id, timeout=600) == "success"
        for folder, run_id in runs.items():
            page, frame = pages[folder]
            summary = json.loads((output / run_id / "_parallelrun" / "summary.json").read_text())
            wait_for_text(frame, "state", "^finished$")
            assert figure(frame, "summary-status") == summary["status"] == "succeeded"
            assert figure(frame, "summary-mini-batches") == (
                f"{summary['succeeded_mini_batches']} succeeded, {summary['failed_mini_batches']} failed "
                f"of {summary['total_mini_batches']}"
            )
            assert figure(frame, "summary-items") == (
                f"{summary['succeeded_items']} succeeded, {summary['failed_items']} failed "
                f"of {summary['total_items']}"
            )
            assert summary["total_mini_batches"] == totals[folder]
            assert summary["failed_items"] == totals[folder]  # one of the two items of each mini-batch
            assert figure(frame, "failed") == f"0 mini-batches, {totals[folder]} items"
            assert figure(frame, "mini-batches") == f"{totals[folder]} of {totals[folder]} done"
            assert figure(frame, "summary-output") == summary["output"]
            page.screenshot(path=str(ARTEFACTS / f"run-view-finished-{folder}.png"), full_page=True)
        check_report_is_shown(airflow, pages["a"][0], output / runs["a"], runs["a"])
    finally:
        context.close()


def check_report_is_shown(airflow: RealAirflow, page: Any, run_output: Path, run_id: str) -> None:
    """Check that the view links and embeds the run's ``report.html``, served as the aggregate wrote it."""
    report = run_output / "_parallelrun" / "report.html"
    assert report.exists(), f"the aggregate wrote no {report}"
    page.reload()
    frame = view_frame(page)
    wait_for_text(frame, "report-link", "^Open the report$", timeout=60)
    url = f"{airflow.base_url}/parallelrun/dags/{DAG_ID}/runs/{run_id}/groups/score/report.html"
    served = page.request.get(url)  # with the logged-in user's session cookie
    assert served.status == 200 and served.body() == report.read_bytes()
    # Its scripts run sandboxed, in an origin of their own: not with the viewer's Airflow session.
    assert served.headers["content-security-policy"].startswith("sandbox allow-scripts")
    assert frame.locator("iframe[data-testid='report']").count() == 1
    page.screenshot(path=str(ARTEFACTS / "run-view-report.png"), full_page=True)


def test_a_user_who_may_not_read_the_dag_is_refused_the_view(browser: Any, airflow: RealAirflow) -> None:
    airflow.add_dag(HIDDEN_DAG_ID, HIDDEN_DAG)
    airflow.wait_for_dag(HIDDEN_DAG_ID)
    run_id = airflow.trigger(HIDDEN_DAG_ID)
    view = f"/parallelrun/dags/{HIDDEN_DAG_ID}/runs/{run_id}"
    tokens = {user: airflow.get_token(user) for user in ("reader", "outsider")}  # type: ignore[call-arg]

    def status(route: str, user: str | None) -> int:
        headers = {"Authorization": f"Bearer {tokens[user]}"} if user else {}
        return httpx.get(airflow.base_url + route, headers=headers, timeout=30).status_code

    for route in (view, view + "/progress", view + "/groups/score/report.html"):
        assert status(route, None) == 401, route
        assert status(route, "outsider") == 403, route
    assert status(view, "reader") == 200
    assert status(view + "/progress", "reader") == 200
    # Airflow's own API agrees: the outsider may not read this DAG, but may read the other one.
    assert status(f"/api/v2/dags/{HIDDEN_DAG_ID}", "outsider") == 403
    assert status(f"/api/v2/dags/{DAG_ID}", "outsider") in (200, 404)

    # In the browser too: logged in as the outsider, the view's page is refused.
    context = browser.new_context()
    try:
        page = context.new_page()
        login(page, airflow.base_url, "outsider")
        response = page.goto(airflow.base_url + view)
        assert response is not None and response.status == 403
    finally:
        context.close()
