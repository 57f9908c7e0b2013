"""Test tools that ship with the package: fault injection (a run hook) and a local Airflow
harness. Library code never imports this package."""
