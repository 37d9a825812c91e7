"""A real Airflow with users who log in, and a headless Chromium, for the tests of the "Parallel run" view.

``UsersAirflow`` is ``RealAirflow`` with login required: SimpleAuthManager's users (``USERS``,
passwords from a file this module writes) instead of "everyone is an admin", and the
``HiddenDagsAuthManager`` hiding given DAGs from given users. Its REST calls use the admin's token.

The browser is Debian's ``chromium`` driven by Playwright, which never downloads one here
(``executable_path``). Without it the tests skip, saying how to install it, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.airflow.real_airflow import AirflowError, RealAirflow, running_airflow
from tests.browser.hidden_dags_auth import HIDDEN_DAGS_ENV

REPO = Path(__file__).resolve().parents[2]
#: Screenshots and page dumps of the browser tests (git-ignored), kept for a person to look at.
ARTEFACTS = REPO / "tests" / "artefacts"
#: user -> (SimpleAuthManager role, password)
USERS = {
    "admin": ("admin", "admin-pw"),
    "reader": ("viewer", "reader-pw"),
    "outsider": ("viewer", "outsider-pw"),
}
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def plugin_discovery_env() -> dict[str, str]:
    """Return the setting that lets Airflow find the plugin in the installed package.

    An install of this version declares the ``airflow.plugins`` entry point, which Airflow reads
    by default. An editable install made before that entry point existed lacks it: Airflow then
    finds the plugin in the provider metadata only with ``lazy_discover_providers`` off (the
    other documented way); under CI, which installs afresh, a missing entry point fails.
    """
    try:
        entry_points = distribution("airflow-provider-parallelrun").entry_points
    except PackageNotFoundError:
        entry_points = ()
    if any(ep.group == "airflow.plugins" and ep.name == "parallelrun" for ep in entry_points):
        return {}
    if os.environ.get("CI") == "true":
        pytest.fail(
            "the installed package declares no airflow.plugins entry point: reinstall it (make install)"
        )
    return {"AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False"}


class UsersAirflow(RealAirflow):
    """RealAirflow whose REST calls log in as ``admin`` (every other request needs a login too)."""

    def get_token(self, user: str = "admin") -> str:
        response = httpx.post(
            f"{self.base_url}/auth/token", json={"username": user, "password": USERS[user][1]}, timeout=30
        )
        if response.status_code not in (200, 201):
            raise AirflowError(
                f"POST /auth/token as {user}: HTTP {response.status_code}: {response.text[:500]}"
            )
        return str(response.json()["access_token"])


def users_env(home: Path, hidden: dict[str, list[str]]) -> dict[str, str]:
    """Return the components' settings for ``USERS`` with their passwords, and ``hidden`` DAGs per user."""
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({user: password for user, (_, password) in USERS.items()}))
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.browser.hidden_dags_auth.HiddenDagsAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{role}" for u, (role, _) in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        HIDDEN_DAGS_ENV: json.dumps(hidden),
        **plugin_discovery_env(),
    }


def airflow_with_users(home: Path, hidden: dict[str, list[str]]) -> Iterator[UsersAirflow]:
    """Yield a started ``UsersAirflow`` on ``home``; stop it, with everything it started, afterwards."""
    for airflow in running_airflow(home, users_env(home, hidden), kind=UsersAirflow):
        assert isinstance(airflow, UsersAirflow)
        yield airflow


def chromium_path() -> str:
    """Return Debian's Chromium; skip (fail under ``CI=true``) when it or Playwright is missing."""
    found = next((p for p in CHROMIUM_CANDIDATES if os.path.exists(p)), None) or shutil.which("chromium")
    missing = []
    if found is None:
        missing.append("chromium (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        message = f"the browser tests need {' and '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    assert found is not None
    return found


def login(page: Any, base_url: str, user: str) -> None:
    """Log ``user`` in through the UI's login form, as a person would."""
    page.goto(f"{base_url}/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(USERS[user][1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
