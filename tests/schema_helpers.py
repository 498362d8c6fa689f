"""The package's JSON Schemas (cliniko_sync/schemas/) loaded for validation: relative `$ref`s
(`common.schema.json#/$defs/…`, `sync-result.schema.json`) resolve by file name, as they do on disk."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_FILES = {path.name: path for path in files("cliniko_sync.schemas").iterdir() if path.name.endswith(".json")}
SCHEMAS: dict[str, Any] = {name: json.loads(path.read_text(encoding="utf-8")) for name, path in SCHEMA_FILES.items()}
REGISTRY: Registry[Any] = Registry().with_resources(
    (name, Resource.from_contents(schema)) for name, schema in SCHEMAS.items()
)


def validator(name: str) -> Draft202012Validator:
    """The validator of `NAME.schema.json`, with format checks (uuid, date-time) on."""
    return Draft202012Validator(
        SCHEMAS[f"{name}.schema.json"], registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def errors(name: str, document: Any) -> list[str]:
    """Every way `document` breaks the schema, each as `path: message` (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(document)]
