"""Can a run's explanations be trusted? Faithfulness (deletion and insertion curves, infidelity),
stability (max-sensitivity) and a model-randomisation sanity check on a sample of its rows:
:func:`ig_airflow.quality.stage.assess_quality`. Also the drift stage's extra IG pass on a
sample, each run's rows explained by the other run's model (:mod:`.cross_terms`)."""
