"""Emulator of HubSpot's CRM v3/v4 API for companies, contacts, deals, tickets and tasks.

Objects (list, read, create, update, archive, lookup by a unique property), batch read / create /
update / upsert / archive, CRM search, properties and groups (`hubspot_meta`), owners, and v3/v4
associations (`hubspot_assoc`), in HubSpot's paths, status codes and JSON shapes, so that
hubspot-api-client works against it unmodified: `HubSpot(access_token=..., host=<sandbox url>)`.
Limits follow HubSpot's documentation: list pages of 100, batches of 100, search pages of 200 and
a 10,000-result search window, 190 requests / 10 s and 5 searches / s when rate limits are "real".
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from . import hubspot_schema as schema
from .emulator import ApiError, json_response
from .hubspot_assoc import AssociationHandlers
from .hubspot_meta import MetaHandlers
from .hubspot_search import SearchError, matching_ids, parse_search

_OBJ = "/crm/v3/objects/<type_name>"
_V4 = "/crm/v4/objects/<from_name>/<from_id>/associations"
_V4B = "/crm/v4/associations/<from_name>/<to_name>"
_PROPS = "/crm/v3/properties/<type_name>"


def _rule(path: str, endpoint: str, *methods: str) -> Rule:
    return Rule(path, endpoint=endpoint, methods=list(methods))


class HubSpotEmulator(AssociationHandlers, MetaHandlers):
    """HubSpot CRM emulator serving one sandbox world."""

    rules = [
        _rule(_OBJ, "list_objects", "GET"), _rule(_OBJ, "create_object", "POST"),
        _rule(_OBJ + "/<object_id>", "get_object", "GET"), _rule(_OBJ + "/<object_id>", "update_object", "PATCH"),
        _rule(_OBJ + "/<object_id>", "archive_object", "DELETE"),
        _rule(_OBJ + "/batch/read", "batch_read", "POST"), _rule(_OBJ + "/batch/create", "batch_create", "POST"),
        _rule(_OBJ + "/batch/update", "batch_update", "POST"), _rule(_OBJ + "/batch/upsert", "batch_upsert", "POST"),
        _rule(_OBJ + "/batch/archive", "batch_archive", "POST"), _rule(_OBJ + "/search", "search", "POST"),
        _rule(_PROPS, "props_list", "GET"), _rule(_PROPS, "props_create", "POST"),
        _rule(_PROPS + "/batch/read", "props_batch_read", "POST"),
        _rule(_PROPS + "/groups", "groups_list", "GET"), _rule(_PROPS + "/groups", "groups_create", "POST"),
        _rule(_PROPS + "/groups/<group_name>", "groups_get", "GET"),
        _rule(_PROPS + "/<prop_name>", "props_get", "GET"), _rule(_PROPS + "/<prop_name>", "props_update", "PATCH"),
        _rule(_PROPS + "/<prop_name>", "props_archive", "DELETE"),
        _rule("/crm/v3/owners/", "owners_list", "GET"), _rule("/crm/v3/owners/<owner_id>", "owners_get", "GET"),
        _rule(_V4 + "/<to_name>", "v4_list", "GET"),
        _rule(_V4 + "/default/<to_name>/<to_id>", "v4_put_default", "PUT"),
        _rule(_V4 + "/<to_name>/<to_id>", "v4_put_labeled", "PUT"),
        _rule(_V4 + "/<to_name>/<to_id>", "v4_delete", "DELETE"),
        _rule(_V4B + "/batch/read", "v4_batch_read", "POST"), _rule(_V4B + "/batch/create", "v4_batch_create", "POST"),
        _rule(_V4B + "/batch/associate/default", "v4_batch_default", "POST"),
        _rule(_V4B + "/batch/archive", "v4_batch_archive", "POST"), _rule(_V4B + "/labels", "v4_labels", "GET"),
        _rule("/crm/v3/associations/<from_name>/<to_name>/batch/read", "v3_batch_read", "POST"),
        _rule("/crm/v3/associations/<from_name>/<to_name>/batch/create", "v3_batch_create", "POST"),
    ]

    # -- shared pieces ---------------------------------------------------------------------------
    def _record_json(self, object_type: str, rec: dict, properties: list[str] | None,
                     associations: list[str] | None) -> dict[str, Any]:
        out = self.object_json(object_type, rec, properties)
        if associations:
            inline = self.inline_json(object_type, rec["id"], associations)
            if inline:
                out["associations"] = inline
        return out

    def _lookup(self, request: Request, object_type: str, object_id: str, archived: bool = False) -> dict:
        id_property = request.args.get("idProperty")
        self.check_id_property(object_type, id_property)
        if (not id_property or id_property == "hs_object_id") and not object_id.isdigit():
            self.fail(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND",
                      context={"id": [object_id]})
        rec = self.find(object_type, object_id, id_property, archived)
        if rec is None:
            self.fail(404, "resource not found", "OBJECT_NOT_FOUND")
        return rec

    def _conflict(self, object_type: str, clean: dict[str, Any], own_id: str | None) -> ApiError | None:
        """HubSpot's 409 for a unique value (a contact's email) another live record already holds."""
        for prop in sorted(self.unique_properties(object_type) - {"hs_object_id"}):
            value = clean.get(prop)
            holder = self.unique_index(object_type, prop).get(str(value).lower()) if value else None
            if holder and holder != own_id:
                message = (f"Contact already exists. Existing ID: {holder}" if prop == "email"
                           else f"A {schema.singular(object_type)} with {prop} {value} already exists. "
                                f"Existing ID: {holder}")
                return ApiError(409, {"status": "error", "message": message,
                                      "correlationId": self.correlation_id(), "category": "CONFLICT"})
        return None

    def _not_found_error(self, object_type: str, ids: list[str]) -> dict[str, Any]:
        return self.batch_error("OBJECT_NOT_FOUND",
                                f"Could not get some {schema.upper_name(object_type)} objects, they may be "
                                f"deleted or not exist. Check that ids are valid.", {"ids": ids})

    def _input_error(self, errors: list[schema.PropertyError], trace: str | None) -> dict[str, Any]:
        body = schema.validation_body(errors, "")
        return self.batch_error("VALIDATION_ERROR", body["message"],
                                {"objectWriteTraceId": [trace]} if trace else {}) | {"errors": body["errors"]}

    # -- objects ---------------------------------------------------------------------------------
    def list_objects(self, request: Request, type_name: str) -> Any:
        object_type = self.object_type(type_name)
        limit = self.int_arg(request, "limit", 10, 1, 100)
        archived = self.bool_arg(request, "archived")
        properties, associations = self.list_arg(request, "properties"), self.list_arg(request, "associations")
        ids, after = self.sorted_ids(object_type), request.args.get("after")
        if after and not after.isdigit():
            self.fail(400, f"Unable to parse paging cursor after={after!r}")
        table, picked = self.table(object_type), []
        for index in range(bisect_left(ids, int(after), key=int) if after else 0, len(ids)):
            rec = table[ids[index]]
            if bool(rec.get("archived")) == archived:
                picked.append(rec)
                if len(picked) > limit:
                    break
        body: dict[str, Any] = {"results": [self._record_json(object_type, r, properties, associations)
                                            for r in picked[:limit]]}
        if len(picked) > limit:
            nxt = picked[limit]["id"]
            body["paging"] = {"next": {"after": nxt, "link": self.page_link(request, nxt)}}
        return body

    def get_object(self, request: Request, type_name: str, object_id: str) -> Any:
        object_type = self.object_type(type_name)
        rec = self._lookup(request, object_type, object_id, self.bool_arg(request, "archived"))
        return self._record_json(object_type, rec, self.list_arg(request, "properties"),
                                 self.list_arg(request, "associations"))

    def create_object(self, request: Request, type_name: str) -> Response:
        object_type = self.object_type(type_name)
        body = self.body_json(request)
        if not isinstance(body, dict) or "properties" not in body:
            self.fail(400, "Invalid input JSON: the request body needs a `properties` object")
        clean, errors = self.clean_properties(object_type, body["properties"])
        if errors:
            self.validation_failure(errors)
        links = self.parse_inline(object_type, body.get("associations"))
        conflict = self._conflict(object_type, clean, None)
        if conflict:
            raise conflict
        rec = self.write(object_type, clean)
        for to_type, to_id, type_id in links:
            self.associate(object_type, rec["id"], to_type, to_id, type_id)
        return json_response(self.object_json(object_type, rec, everything=True), 201)

    def update_object(self, request: Request, type_name: str, object_id: str) -> Any:
        object_type = self.object_type(type_name)
        rec = self._lookup(request, object_type, object_id)
        body = self.body_json(request)
        if not isinstance(body, dict) or "properties" not in body:
            self.fail(400, "Invalid input JSON: the request body needs a `properties` object")
        clean, errors = self.clean_properties(object_type, body["properties"])
        if errors:
            self.validation_failure(errors)
        conflict = self._conflict(object_type, clean, rec["id"])
        if conflict:
            raise conflict
        return self.object_json(object_type, self.write(object_type, clean, rec["id"]), everything=True)

    def archive_object(self, request: Request, type_name: str, object_id: str) -> Response:
        object_type = self.object_type(type_name)
        rec = self.find(object_type, object_id)
        if rec is not None:
            self.archive(object_type, rec["id"])
        return Response(status=204)  # HubSpot answers 204 for ids it does not know as well

    # -- batch -----------------------------------------------------------------------------------
    def batch_read(self, request: Request, type_name: str) -> Response:
        object_type = self.object_type(type_name)
        body, started = self.body_json(request), self.now_iso()
        inputs = self.batch_inputs(body)
        if body.get("propertiesWithHistory") and len(inputs) > 50:
            self.fail(400, "The maximum number of inputs supported in a batch request for property histories "
                           "is 50. Please reduce the number of items and try again")
        id_property = body.get("idProperty")
        self.check_id_property(object_type, id_property)
        properties = body.get("properties") or None
        archived = self.bool_arg(request, "archived")
        results, seen, missing = [], set(), []
        for item in inputs:
            if not isinstance(item, dict) or item.get("id") is None:
                self.fail(400, "Invalid input JSON: each input needs an `id`")
            rec = self.find(object_type, str(item["id"]), id_property, archived)
            if rec is None:
                missing.append(str(item["id"]))
            elif rec["id"] not in seen:
                seen.add(rec["id"])
                results.append(self.object_json(object_type, rec, properties))
        errors = [self._not_found_error(object_type, missing)] if missing else []
        return self.batch_reply(results, errors, started, 200)

    def batch_create(self, request: Request, type_name: str) -> Response:
        object_type = self.object_type(type_name)
        started, inputs = self.now_iso(), self.batch_inputs(self.body_json(request))
        # With an objectWriteTraceId on every input HubSpot reports failures per input (207);
        # otherwise one invalid input fails the whole batch with 400.
        multi = bool(inputs) and all(isinstance(i, dict) and i.get("objectWriteTraceId") for i in inputs)
        plans, errors, all_errors = [], [], []
        for item in inputs:
            if not isinstance(item, dict) or "properties" not in item:
                self.fail(400, "Invalid input JSON: each input needs a `properties` object")
            clean, problems = self.clean_properties(object_type, item["properties"])
            links = self.parse_inline(object_type, item.get("associations"))
            if problems:
                all_errors += problems
                errors.append(self._input_error(problems, item.get("objectWriteTraceId")))
            else:
                plans.append((clean, links))
        if all_errors and not multi:
            self.validation_failure(all_errors)
        results = []
        for clean, links in plans:
            conflict = self._conflict(object_type, clean, None)
            if conflict:
                if not multi:
                    raise conflict
                errors.append(self.batch_error("CONFLICT", conflict.body["message"], {}))
                continue
            rec = self.write(object_type, clean)
            for to_type, to_id, type_id in links:
                self.associate(object_type, rec["id"], to_type, to_id, type_id)
            results.append(self.object_json(object_type, rec, everything=True))
        return self.batch_reply(results, errors, started, 201)

    def _duplicates(self, inputs: list[Any]) -> None:
        ids = [str(i.get("id")) for i in inputs if isinstance(i, dict)]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            self.fail(400, f"Duplicate IDs found in batch input: [{', '.join(dupes)}]. IDs must be unique")

    def batch_update(self, request: Request, type_name: str) -> Response:
        object_type = self.object_type(type_name)
        started, inputs = self.now_iso(), self.batch_inputs(self.body_json(request))
        self._duplicates(inputs)
        plans, missing, all_errors = [], [], []
        for item in inputs:
            if not isinstance(item, dict) or item.get("id") is None or "properties" not in item:
                self.fail(400, "Invalid input JSON: each input needs an `id` and a `properties` object")
            id_property = item.get("idProperty")
            self.check_id_property(object_type, id_property)
            clean, problems = self.clean_properties(object_type, item["properties"])
            all_errors += problems
            rec = self.find(object_type, str(item["id"]), id_property)
            if rec is None:
                missing.append(str(item["id"]))
            else:
                plans.append((rec, clean))
        if all_errors:
            self.validation_failure(all_errors)
        results, errors = [], [self._not_found_error(object_type, missing)] if missing else []
        for rec, clean in plans:
            conflict = self._conflict(object_type, clean, rec["id"])
            if conflict:
                errors.append(self.batch_error("CONFLICT", conflict.body["message"], {"ids": [rec["id"]]}))
                continue
            results.append(self.object_json(object_type, self.write(object_type, clean, rec["id"]),
                                            everything=True))
        return self.batch_reply(results, errors, started, 200)

    def batch_upsert(self, request: Request, type_name: str) -> Response:
        object_type = self.object_type(type_name)
        started, inputs = self.now_iso(), self.batch_inputs(self.body_json(request))
        self._duplicates(inputs)
        results, errors = [], []
        for item in inputs:
            if not isinstance(item, dict) or item.get("id") in (None, "") or "properties" not in item:
                self.fail(400, "Invalid input JSON: each input needs an `id` and a `properties` object")
            id_property = item.get("idProperty")
            if not id_property or id_property == "hs_object_id":
                self.fail(400, "Upsert needs an idProperty naming a property with unique values")
            self.check_id_property(object_type, id_property)
            clean, problems = self.clean_properties(object_type, item["properties"])
            if problems:
                errors.append(self._input_error(problems, item.get("objectWriteTraceId")))
                continue
            key = str(item["id"])
            rec = self.find(object_type, key, id_property)
            conflict = self._conflict(object_type, clean, rec["id"] if rec else None)
            if conflict:
                errors.append(self.batch_error("CONFLICT", conflict.body["message"], {"ids": [key]}))
                continue
            if rec is None:
                rec = self.write(object_type, {**clean, id_property: key})
                new = True
            else:
                rec, new = self.write(object_type, clean, rec["id"]), False
            results.append({**self.object_json(object_type, rec, everything=True), "new": new})
        return self.batch_reply(results, errors, started, 200)

    def batch_archive(self, request: Request, type_name: str) -> Response:
        object_type = self.object_type(type_name)
        for item in self.batch_inputs(self.body_json(request)):
            if not isinstance(item, dict) or item.get("id") is None:
                self.fail(400, "Invalid input JSON: each input needs an `id`")
            rec = self.find(object_type, str(item["id"]))
            if rec is not None:
                self.archive(object_type, rec["id"])
        return Response(status=204)

    # -- search ----------------------------------------------------------------------------------
    def _kind(self, object_type: str, prop: str) -> str:
        ptype = (self.definitions(object_type).get(prop) or {}).get("type", "string")
        return {"number": "number", "date": "time", "datetime": "time"}.get(ptype, "string")

    def search(self, request: Request, type_name: str) -> Any:
        object_type = self.object_type(type_name)
        try:
            q = parse_search(self.body_json(request, required=False), request.get_data(cache=True))
        except SearchError as exc:
            self.fail(400, str(exc))
        key, stamp = q.cache_key(object_type), self.stamp(object_type)
        ids = self.search_cache.get(key, stamp)
        if ids is None:  # one scan per distinct query; later pages come from the cache
            kinds: dict[str, str] = {}

            def kind_of(prop: str) -> str:
                if prop not in kinds:
                    kinds[prop] = self._kind(object_type, prop)
                return kinds[prop]

            ids = matching_ids(self.table(object_type).values(), q, kind_of,
                               lambda rec, p: self.value(object_type, rec, p),
                               schema.SEARCHABLE_PROPERTIES[object_type])
            self.search_cache.put(key, stamp, ids)
        table = self.table(object_type)
        page = ids[q.after:q.after + q.limit]
        body: dict[str, Any] = {"total": len(ids),
                                "results": [self.object_json(object_type, table[i], q.properties or None)
                                            for i in page]}
        if q.after + q.limit < len(ids):
            body["paging"] = {"next": {"after": str(q.after + q.limit)}}
        return body
