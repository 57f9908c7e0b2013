"""Can a run's explanations be trusted? Faithfulness (deletion and insertion curves, infidelity),
stability (max-sensitivity) and a model-randomisation sanity check on a sample of its rows:
:func:`ig_airflow.quality.stage.assess_quality`."""
