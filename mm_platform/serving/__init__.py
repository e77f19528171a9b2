"""Serving: the monitored model, its scoring-server launcher, the prediction log, labels."""
