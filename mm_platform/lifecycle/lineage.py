"""`mm lineage`: the tree of registered versions, read from registry tags alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    """One registered version and the versions made from it."""

    version: str
    run_type: str
    label: str
    metrics: dict[str, float]
    aliases: list[str]
    children: list[Node] = field(default_factory=list)


def build_tree(versions: list[dict[str, Any]]) -> list[Node]:
    """Roots (versions with no known parent) with their descendants, by version number."""
    nodes: dict[str, Node] = {}
    for v in versions:
        tags = v["tags"]
        metrics = {}
        for key, value in tags.items():
            if key.startswith("mm.metric."):
                try:
                    metrics[key[len("mm.metric.") :]] = float(value)
                except ValueError:
                    continue
        label = tags.get("mm.variant") or tags.get("mm.candidate") or ""
        nodes[v["version"]] = Node(
            v["version"], tags.get("mm.run_type", "unknown"), label, metrics, v["aliases"]
        )
    roots = []
    for v in versions:
        parent = v["tags"].get("mm.parent_model_version")
        node = nodes[v["version"]]
        if parent in nodes and parent != v["version"]:
            nodes[parent].children.append(node)
        else:
            roots.append(node)
    return roots
