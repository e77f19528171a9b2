"""Training: the hyper-parameter search, its record, and logging it to MLflow."""
