"""An auth manager for the browser tests: Airflow's SimpleAuthManager, hiding some DAGs from some users.

SimpleAuthManager grants by role only (every viewer reads every DAG), and the FAB auth manager,
which has per-DAG permissions, is not installed. The view's rule ("a user who may not see the
DAG may not see its view") needs a user refused one DAG and allowed others: this subclass
refuses ``PARALLELRUN_TEST_HIDDEN_DAGS`` (JSON ``{"user": ["dag_id", ...]}``) and asks
SimpleAuthManager for everything else. The api-server loads it by ``[core] auth_manager``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

HIDDEN_DAGS_ENV = "PARALLELRUN_TEST_HIDDEN_DAGS"


class HiddenDagsAuthManager(SimpleAuthManager):
    """SimpleAuthManager, except that the users named in ``PARALLELRUN_TEST_HIDDEN_DAGS`` miss those DAGs."""

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        hidden = json.loads(os.environ.get(HIDDEN_DAGS_ENV) or "{}").get(user.username, [])
        if details is not None and details.id in hidden:
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
