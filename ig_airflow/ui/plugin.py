"""The ig_airflow Airflow plugin (entry point ``airflow.plugins``): the explanation views served
under ``/ig-airflow`` of the API server, shown as tabs on a DAG and a DAG run in the Airflow UI,
and the operators' extra links registered so that the UI can show them."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ig_airflow.operators.links import EXTRA_LINKS, URL_PREFIX
from ig_airflow.ui.app import create_app

VIEWS = [
    {
        "name": "Explanations",
        "href": f"{URL_PREFIX.lstrip('/')}/dags/{{DAG_ID}}/runs/{{RUN_ID}}/",
        "destination": "dag_run",
        "url_route": "ig_airflow_run",
    },
    {
        "name": "Explanation runs",
        "href": f"{URL_PREFIX.lstrip('/')}/dags/{{DAG_ID}}/",
        "destination": "dag",
        "url_route": "ig_airflow_runs",
    },
]


class IGAirflowPlugin(AirflowPlugin):
    """Explanations in the Airflow UI, behind Airflow's login."""

    name = "ig_airflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "ig_airflow explanations"}]
    external_views = VIEWS
    operator_extra_links = list(EXTRA_LINKS)
