"""sObject Collections (``/composite/sobjects``) of the Salesforce emulator: create, update and delete
up to 200 records per call with ``allOrNone``, and retrieve up to 2,000 by id.

Malformed bodies, unknown fields and values that cannot be deserialized refuse the whole request
(400), as Salesforce does; DML problems (required field missing, value too long, bad reference...)
are reported per record, and with ``allOrNone`` every other record reports
ALL_OR_NONE_OPERATION_ROLLED_BACK and nothing is written.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request

from .salesforce_schema import ID_RE, PREFIX_TO_OBJECT, RecordError, handler, sf_error
from .soql import id18

if TYPE_CHECKING:
    from .salesforce_schema import OrgSchema
    from .world import World

MAX_COLLECTION = 200
MAX_RETRIEVE_IDS = 2000
ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "fields": [],
               "message": "Record rolled back because not all records were valid and the request was using "
                          "AllOrNone header"}
TOO_MANY = "record limit reached. cannot submit more than 200 records into this call"
P = "/services/data/<version>"
COLLECTION_RULES = [
    Rule(f"{P}/composite/sobjects", endpoint="composite_create", methods=["POST"]),
    Rule(f"{P}/composite/sobjects", endpoint="composite_update", methods=["PATCH"]),
    Rule(f"{P}/composite/sobjects", endpoint="composite_delete", methods=["DELETE"]),
    Rule(f"{P}/composite/sobjects/<sobject>", endpoint="composite_retrieve", methods=["GET", "POST"]),
]


class CollectionsMixin:
    """The sObject Collections handlers; mixed into SalesforceEmulator, whose helpers they use."""

    world: World
    schema: OrgSchema
    if TYPE_CHECKING:  # provided by SalesforceEmulator
        def _json(self, request: Request) -> Any: ...
        def _version(self, version: str) -> str: ...
        def _sobject(self, name: str) -> str: ...
        def _write(self, sobject: str, values: dict, record: dict | None) -> dict: ...
        def _fields_param(self, sobject: str, raw: Any) -> list[str] | None: ...
        def _render(self, version: str, sobject: str, rec: dict, fields: list[str] | None = None) -> dict: ...

    def _collection(self, request: Request) -> tuple[list[dict], bool]:
        body = self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise sf_error(400, "JSON_PARSER_ERROR", "The request body must be an object with a 'records' list")
        records = body["records"]
        if len(records) > MAX_COLLECTION:
            raise sf_error(400, "EXCEEDED_ID_LIMIT", TOO_MANY)
        if not all(isinstance(r, dict) for r in records):
            raise sf_error(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
        return records, bool(body.get("allOrNone", False))

    def _record_type(self, rec: dict) -> str:
        attributes = rec.get("attributes")
        name = attributes.get("type") if isinstance(attributes, dict) else None
        if not isinstance(name, str) or not name:
            raise sf_error(400, "INVALID_TYPE", "Must send a concrete entity type.")
        sobject = self.schema.sobject_name(name)
        if sobject is None:
            raise sf_error(400, "INVALID_TYPE", f"sObject type '{name}' is not supported.")
        return sobject

    def _commit(self, batch: list[tuple[str, dict, list[RecordError], dict | None, Any]], all_or_none: bool,
                creating: bool) -> list[dict]:
        """Write the good records (or none, with allOrNone) and report one result per record: failed
        creates have no "id" (as in Salesforce's examples), failed updates carry the id sent."""
        failed = any(errors for _, _, errors, _, _ in batch)
        results = []
        for sobject, values, errors, rec, rec_id in batch:
            result: dict[str, Any] = {} if creating else {"id": rec["Id"] if rec else rec_id}
            if errors:
                result.update(success=False, errors=[e.as_result() for e in errors])
            elif all_or_none and failed:
                result.update(success=False, errors=[ROLLED_BACK])
            else:
                written = self._write(sobject, values, rec)
                result = {"id": written["Id"], "success": True, "errors": []}
            results.append(result)
        return results

    @handler
    def composite_create(self, request: Request, version: str) -> list[dict]:
        self._version(version)
        records, all_or_none = self._collection(request)
        batch = []
        for body in records:
            sobject = self._record_type(body)
            if any(k.lower() == "id" for k in body):
                error = RecordError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
                batch.append((sobject, {}, [error], None, None))
                continue
            values, errors = self.schema.prepare(sobject, body, creating=True)
            batch.append((sobject, values, errors, None, None))
        return self._commit(batch, all_or_none, creating=True)

    def _target(self, sobject: str | None, rec_id: Any) -> tuple[dict | None, list[RecordError]]:
        """The record an update/delete addresses (by its key prefix when `sobject` is None), or the
        per-record error Salesforce reports."""
        if not rec_id:
            return None, [RecordError("MISSING_ARGUMENT", "Id not specified in an update call", [])]
        if not isinstance(rec_id, str) or not ID_RE.match(rec_id):
            return None, [RecordError("MALFORMED_ID", f"{sobject or 'Record'} ID: id value of incorrect type: "
                                      f"{rec_id}", ["Id"])]
        sobject = sobject or PREFIX_TO_OBJECT.get(rec_id[:3], "")
        rec = self.world.salesforce.get(sobject, {}).get(id18(rec_id))
        if rec is None:
            return None, [RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])]
        if rec.get("IsDeleted"):
            return None, [RecordError("ENTITY_IS_DELETED", "entity is deleted", [])]
        return rec, []

    @handler
    def composite_update(self, request: Request, version: str) -> list[dict]:
        self._version(version)
        records, all_or_none = self._collection(request)
        batch = []
        for body in records:
            sobject = self._record_type(body)
            rec_id = next((v for k, v in body.items() if k.lower() == "id"), None)
            rec, errors = self._target(sobject, rec_id)
            fields = {k: v for k, v in body.items() if k.lower() != "id"}
            values, more = self.schema.prepare(sobject, fields, creating=False)
            batch.append((sobject, values, errors or more, rec, rec_id))
        return self._commit(batch, all_or_none, creating=False)

    @handler
    def composite_delete(self, request: Request, version: str) -> list[dict]:
        self._version(version)
        ids = [i for i in request.args.get("ids", "").split(",") if i]
        if len(ids) > MAX_COLLECTION:
            raise sf_error(400, "EXCEEDED_ID_LIMIT", TOO_MANY)
        all_or_none = request.args.get("allOrNone", "false").lower() == "true"
        targets = []
        for rec_id in ids:
            rec, errors = self._target(None, rec_id)
            sobject = PREFIX_TO_OBJECT.get(rec_id[:3], "")
            if rec is not None and not self.schema.deletable(sobject):
                errors = [RecordError("INVALID_TYPE_FOR_OPERATION", "entity type cannot be deleted", [])]
            targets.append((sobject, rec_id, rec, errors))
        failed = any(t[3] for t in targets)
        results = []
        for sobject, rec_id, rec, errors in targets:
            if errors:
                results.append({"id": rec_id, "success": False, "errors": [e.as_result() for e in errors]})
            elif all_or_none and failed:
                results.append({"id": rec_id, "success": False, "errors": [ROLLED_BACK]})
            else:
                assert rec is not None
                self.world.sf_delete(sobject, rec["Id"])
                results.append({"id": rec["Id"], "success": True, "errors": []})
        return results

    @handler
    def composite_retrieve(self, request: Request, version: str, sobject: str) -> list[dict | None]:
        v, sobject = self._version(version), self._sobject(sobject)
        if request.method == "POST":
            body = self._json(request)
            body = body if isinstance(body, dict) else {}
            ids, raw_fields = body.get("ids"), body.get("fields")
        else:
            ids, raw_fields = request.args.get("ids", "").split(","), request.args.get("fields")
        if not raw_fields:
            raise sf_error(400, "MALFORMED_QUERY", "The 'fields' parameter is required")
        if not isinstance(ids, list) or len(ids) > MAX_RETRIEVE_IDS:
            raise sf_error(400, "EXCEEDED_ID_LIMIT", "The 'ids' parameter takes 1 to 2000 record ids")
        fields = self._fields_param(sobject, raw_fields)
        out: list[dict | None] = []
        table = self.world.salesforce.get(sobject, {})
        for rec_id in ids:
            rec = table.get(id18(rec_id)) if isinstance(rec_id, str) and ID_RE.match(rec_id) else None
            out.append(None if rec is None or rec.get("IsDeleted") else self._render(v, sobject, rec, fields))
        return out

