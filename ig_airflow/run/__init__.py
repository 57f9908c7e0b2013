"""Running the IG stage: a batch explainer, the in-process and Ray runners, shards, the
manifest and run hooks."""
