"""Modeling: feature pipelines, metrics and class scores, figures."""
