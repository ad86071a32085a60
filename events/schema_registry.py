"""JSON Schemas of the event catalog, one file per type and version in events/schemas/.

The files are generated from the payload models and committed. A change to a model must
either keep its schema backward compatible (only new optional fields) and regenerate the
file, or add a new version to the catalog with an upcaster from the previous one.

    python -m events.schema_registry check   # what the test suite checks
    python -m events.schema_registry write   # regenerate; refuses breaking changes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from events.catalog import CATALOG, schema_id

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_path(event_type: str, version: int) -> Path:
    return SCHEMA_DIR / f"{event_type}.v{version}.json"


def generated_schema(event_type: str, version: int) -> dict[str, Any]:
    schema = CATALOG[event_type][version].model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id(event_type, version),
        "title": f"{event_type} v{version}",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _resolve(root["$defs"][ref.removeprefix("#/$defs/")], root)
    return schema


def _shape(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A field's type with references resolved and documentation dropped, for comparing."""
    schema = _resolve(schema, root)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("title", "description", "default", "examples"):
            continue
        if key == "properties":
            out[key] = {n: _shape(p, root) for n, p in value.items()}
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_shape(v, root) for v in value]
        elif key == "items" and isinstance(value, dict):
            out[key] = _shape(value, root)
        else:
            out[key] = value
    return out


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why a consumer written for ``old`` could not read data written for ``new`` (or
    the other way): removed fields, retyped fields, newly required fields."""
    problems: list[str] = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name, prop in old_props.items():
        if name not in new_props:
            problems.append(f"field {name!r} was removed")
        elif _shape(prop, old) != _shape(new_props[name], new):
            problems.append(f"field {name!r} changed type")
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        problems.append(f"field {name!r} is newly required")
    if old.get("additionalProperties") != new.get("additionalProperties"):
        problems.append("additionalProperties changed")
    return problems


def check() -> list[str]:
    """Everything wrong between the models and the committed schema files."""
    errors: list[str] = []
    expected = {schema_path(t, v) for t, versions in CATALOG.items() for v in versions}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        if path not in expected:
            errors.append(f"{path.name}: no such type and version in the catalog")
    for event_type, versions in CATALOG.items():
        for version in versions:
            path = schema_path(event_type, version)
            new = generated_schema(event_type, version)
            if not path.exists():
                errors.append(f"{path.name}: missing; run `python -m events.schema_registry "
                              "write`")
                continue
            old = json.loads(path.read_text())
            if render(old) == render(new):
                continue
            breaking = breaking_changes(old, new)
            if breaking:
                errors.append(f"{event_type} v{version} changed incompatibly ("
                              + "; ".join(breaking) + f"): add version {max(versions) + 1} "
                              "to the catalog with an upcaster instead")
            else:
                errors.append(f"{path.name}: the model changed compatibly; regenerate with "
                              "`python -m events.schema_registry write`")
    return errors


def write() -> list[str]:
    """Regenerate the schema files; refuses a breaking change to a committed version."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    refused: list[str] = []
    for event_type, versions in CATALOG.items():
        for version in versions:
            path = schema_path(event_type, version)
            new = generated_schema(event_type, version)
            if path.exists():
                breaking = breaking_changes(json.loads(path.read_text()), new)
                if breaking:
                    refused.append(f"{path.name}: " + "; ".join(breaking))
                    continue
            path.write_text(render(new))
    return refused


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    problems = write() if command == "write" else check()
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
