"""What happens after IG: aggregation into summaries, drift between runs, the HTML report and
one row's "why". Reads run folders through :mod:`ig_airflow.layout`; no framework imports."""
