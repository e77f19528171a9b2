"""Helpers shared by the tests: project files, the `mm` runner, ports, servers."""
