"""Refresh the vendored Kubernetes JSON schemas in tests/k8s/schemas/ (see the README there).

    pip download kubernetes-validate==1.37.0 --no-deps -d /tmp/kv && unzip -q /tmp/kv/*.whl -d /tmp/kv
    python tests/k8s/vendor_schemas.py /tmp/kv/kubernetes_validate/kubernetes-json-schema/v1.33.0-local-strict

copies the per-kind schema of every kind in ``KINDS`` verbatim and writes ``_definitions.json``
reduced to the definitions those kinds reach through ``$ref`` (the full file is 1.4 MB).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

KINDS = [
    "namespace-v1",
    "persistentvolumeclaim-v1",
    "service-v1",
    "deployment-apps-v1",
    "statefulset-apps-v1",
    "networkpolicy-networking-v1",
]
DEFS_PREFIX = "#/$defs/"
SCHEMAS = Path(__file__).parent / "schemas"


def refs(node: Any) -> set[str]:
    """The definition names a schema fragment references (local or via _definitions.json)."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and DEFS_PREFIX in ref:
            found.add(ref.split(DEFS_PREFIX, 1)[1])
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def vendor(source: Path) -> None:
    definitions = json.loads((source / "_definitions.json").read_text())
    needed: set[str] = set()
    pending: set[str] = set()
    for kind in KINDS:
        text = (source / f"{kind}.json").read_text()
        (SCHEMAS / f"{kind}.json").write_text(text)
        pending |= refs(json.loads(text))
    while pending:
        name = pending.pop()
        needed.add(name)
        pending |= refs(definitions["$defs"][name]) - needed
    definitions["$defs"] = {name: definitions["$defs"][name] for name in sorted(needed)}
    (SCHEMAS / "_definitions.json").write_text(json.dumps(definitions, indent=1) + "\n")
    print(f"{len(KINDS)} kinds, {len(needed)} definitions from {source}")


if __name__ == "__main__":
    vendor(Path(sys.argv[1]))
