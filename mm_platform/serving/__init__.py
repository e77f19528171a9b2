"""Serving: the monitored model behind `mlflow models serve`, the prediction log, labels."""
