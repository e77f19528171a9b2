"""Project files: their pydantic models, loading, the catalog of estimators and metrics."""
