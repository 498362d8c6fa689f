"""JSON Schemas (draft 2020-12) of every document `--format json` prints, shipped inside the package: one
`NAME.schema.json` per document, with `common.schema.json` holding the shared definitions (docs/json-output.md)."""
