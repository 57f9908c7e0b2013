"""The ig_airflow views inside the Airflow UI: a FastAPI app behind Airflow's auth manager,
registered by the plugin in :mod:`ig_airflow.ui.plugin`."""
