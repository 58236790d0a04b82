"""Make the trimmed Stripe reference files this test data directory holds.

    python tests/sandbox/data/stripe/make_trimmed.py SPEC3_JSON FIXTURES3_JSON OUT_DIR

From Stripe's OpenAPI spec (stripe/openapi, openapi/spec3.json at API version 2024-04-10) it keeps
the component schemas reachable from the objects the emulator serves. Other top-level API resources
(charge, payment_intent, account, ...: schemas with an ``object`` enum) that those schemas only
mention as expansion alternatives are replaced by an empty schema ``{}`` (any value), so the closure
stays small; the emulator never returns them (it answers null or an id there). From fixtures3.json
it keeps the example objects of the same resources.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

KEEP = ["customer", "deleted_customer", "subscription", "subscription_item", "invoice", "line_item",
        "event", "product", "price", "plan", "billing.meter", "billing.meter_event",
        "billing.meter_event_summary", "discount", "coupon", "error", "api_errors"]


def is_resource(schema: dict) -> bool:
    obj = schema.get("properties", {}).get("object", {})
    return "enum" in obj


def trim_spec(spec: dict) -> dict:
    schemas = spec["components"]["schemas"]
    kept: dict[str, dict] = {}
    opaque: set[str] = set()
    todo = list(KEEP)
    while todo:
        name = todo.pop()
        if name in kept or name in opaque:
            continue
        schema = schemas[name]
        if name not in KEEP and is_resource(schema):
            opaque.add(name)
            continue
        kept[name] = schema
        todo.extend(refs(schema))
    for name in opaque:
        kept[name] = {"description": f"trimmed: the {name} resource (never returned by the sandbox)"}
    return {"openapi": spec["openapi"], "info": spec["info"],
            "components": {"schemas": dict(sorted(kept.items()))}}


def refs(node: object) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            out.append(ref.rsplit("/", 1)[1])
        for value in node.values():
            out.extend(refs(value))
    elif isinstance(node, list):
        for value in node:
            out.extend(refs(value))
    return out


def main(spec_path: str, fixtures_path: str, out_dir: str) -> None:
    out = Path(out_dir)
    spec = json.loads(Path(spec_path).read_text())
    (out / "spec3.v2024-04-10.trimmed.json").write_text(
        json.dumps(trim_spec(spec), separators=(",", ":"), sort_keys=True))
    fixtures = json.loads(Path(fixtures_path).read_text())["resources"]
    kept = {name: fixtures[name] for name in KEEP if name in fixtures}
    (out / "fixtures3.trimmed.json").write_text(json.dumps({"resources": kept}, indent=1, sort_keys=True))


if __name__ == "__main__":
    main(*sys.argv[1:4])
