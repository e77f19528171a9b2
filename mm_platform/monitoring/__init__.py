"""Monitoring: drift jobs, their schedule and the retrain policy."""
