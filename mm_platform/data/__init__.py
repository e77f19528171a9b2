"""Data: the sources a project names, their checks, and how rows are split."""
