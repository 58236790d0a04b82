"""HubSpot associations: the v4 API (read, batch read, default and labeled create, delete), the v3
batch endpoints, and the inline `associations` of object create and read.

Association type ids are HubSpot's HUBSPOT_DEFINED ones (world.HS_ASSOC_TYPES plus the "Primary"
labels and parent/child companies 13/14). A labeled association always comes with the unlabeled
default one, as in HubSpot.
"""
from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from . import hubspot_schema as schema
from .emulator import json_response
from .hubspot_common import HubSpotBase
from .world import HS_ASSOC_TYPES, HS_CHILD_TO_PARENT, HS_PARENT_TO_CHILD

CATEGORIES = ("HUBSPOT_DEFINED", "USER_DEFINED", "INTEGRATOR_DEFINED")
# (from, to) -> {type id: label}; the unlabeled defaults come from the world's table.
_EXTRA: dict[tuple[str, str], dict[int, str | None]] = {
    ("contacts", "companies"): {1: "Primary"}, ("companies", "contacts"): {2: "Primary"},
    ("deals", "companies"): {5: "Primary"}, ("companies", "deals"): {6: "Primary"},
    ("tickets", "companies"): {26: "Primary"}, ("companies", "tickets"): {25: "Primary"},
    ("companies", "companies"): {HS_PARENT_TO_CHILD: "Child Company", HS_CHILD_TO_PARENT: "Parent Company"},
    ("tasks", "deals"): {216: None}, ("deals", "tasks"): {215: None},
    ("tasks", "tickets"): {230: None}, ("tickets", "tasks"): {229: None},
    ("deals", "tickets"): {27: None}, ("tickets", "deals"): {28: None},
}
TYPES: dict[tuple[str, str], dict[int, str | None]] = {}
for (_a, _b), _tid in HS_ASSOC_TYPES.items():
    TYPES.setdefault((_a, _b), {})[_tid] = None
for _pair, _types in _EXTRA.items():
    TYPES.setdefault(_pair, {}).update(_types)
DEFAULT: dict[tuple[str, str], int] = {**HS_ASSOC_TYPES, ("tasks", "deals"): 216, ("deals", "tasks"): 215,
                                       ("tasks", "tickets"): 230, ("tickets", "tasks"): 229,
                                       ("deals", "tickets"): 27, ("tickets", "deals"): 28}
INVERSE: dict[int, int] = {}
for (_a, _b), _tid in DEFAULT.items():
    INVERSE[_tid] = DEFAULT[(_b, _a)]
INVERSE.update({1: 2, 2: 1, 5: 6, 6: 5, 26: 25, 25: 26, HS_PARENT_TO_CHILD: HS_CHILD_TO_PARENT,
                HS_CHILD_TO_PARENT: HS_PARENT_TO_CHILD})
BY_FROM: dict[tuple[str, int], str] = {(a, tid): b for (a, b), types in TYPES.items() for tid in types}
PAGE = 500  # v4 association pages


def v3_type_name(from_type: str, to_type: str, type_id: int, has_primary: bool) -> str:
    """The v3 `type` string of an association (e.g. contact_to_company, parent_to_child_company)."""
    if type_id == HS_PARENT_TO_CHILD:
        return "parent_to_child_company"
    if type_id == HS_CHILD_TO_PARENT:
        return "child_to_parent_company"
    base = f"{schema.singular(from_type)}_to_{schema.singular(to_type)}"
    return f"{base}_unlabeled" if has_primary and TYPES[(from_type, to_type)].get(type_id) is None else base


class AssociationHandlers(HubSpotBase):
    """Association endpoints and helpers (mixed into the emulator)."""

    # -- helpers ---------------------------------------------------------------------------------
    def associated(self, from_type: str, from_id: str, to_type: str) -> list[tuple[str, list[int]]]:
        """(to id, type ids) of the live records associated with an object, in id order."""
        table = self.table(to_type)
        found = self.world.hs_associations(from_type, from_id, to_type)
        live = [(to_id, sorted(tids)) for to_id, tids in found.items()
                if tids and to_id in table and not table[to_id].get("archived")]
        return sorted(live, key=lambda item: int(item[0]))

    def type_specs(self, from_type: str, to_type: str, type_ids: list[int]) -> list[dict[str, Any]]:
        labels = TYPES.get((from_type, to_type), {})
        return [{"category": "HUBSPOT_DEFINED", "typeId": tid, "label": labels.get(tid)} for tid in type_ids]

    def associate(self, a_type: str, a_id: str, b_type: str, b_id: str, type_id: int) -> None:
        self.world.hs_associate(a_type, a_id, b_type, b_id, type_id, INVERSE[type_id])
        default = DEFAULT.get((a_type, b_type))
        if default is not None and default != type_id:
            self.world.hs_associate(a_type, a_id, b_type, b_id, default, INVERSE[default])
        self._write_seq[a_type] += 1
        self._write_seq[b_type] += 1

    def unassociate(self, a_type: str, a_id: str, b_type: str, b_id: str) -> None:
        # world.py has no removal helper; drop both directions under the lock the handler holds.
        for (x_type, x_id), (y_type, y_id) in (((a_type, a_id), (b_type, b_id)), ((b_type, b_id), (a_type, a_id))):
            targets = self.world.hs_assoc.get((x_type, x_id))
            if targets is not None and y_type in targets:
                targets[y_type].pop(y_id, None)

    def check_type(self, from_type: str, to_type: str, type_id: Any, category: Any) -> int:
        if category not in CATEGORIES:
            self.fail(400, f"Invalid input JSON: associationCategory must be one of {', '.join(CATEGORIES)}")
        try:
            tid = int(type_id)
        except (TypeError, ValueError):
            self.fail(400, f"Invalid input JSON: associationTypeId must be an integer, got {type_id!r}")
        if tid not in TYPES.get((from_type, to_type), {}):
            self.fail(400, f"{category} association type {tid} is not valid from {schema.type_id(from_type)} "
                           f"to {schema.type_id(to_type)}")
        return tid

    def require(self, object_type: str, object_id: Any) -> str:
        rec = self.find(object_type, str(object_id))
        if rec is None:
            self.fail(400, "One or more associations are invalid", "VALIDATION_ERROR",
                      context={"INVALID_OBJECT_IDS": [str(object_id)],
                               "objectType": [schema.type_id(object_type)]})
        return rec["id"]

    def parse_inline(self, from_type: str, items: Any) -> list[tuple[str, str, int]]:
        """Validate the `associations` of a create: [(to type, to id, type id)]."""
        if items is None:
            return []
        if not isinstance(items, list):
            self.fail(400, "Invalid input JSON: associations must be a list")
        parsed = []
        for item in items:
            to_id = (item.get("to") or {}).get("id") if isinstance(item, dict) else None
            types = item.get("types") if isinstance(item, dict) else None
            if to_id is None or not isinstance(types, list) or not types:
                self.fail(400, "Invalid input JSON: each association needs `to.id` and a `types` list")
            for spec in types:
                if not isinstance(spec, dict):
                    self.fail(400, "Invalid input JSON: association types must be objects")
                tid = spec.get("associationTypeId")
                to_type = BY_FROM.get((from_type, int(tid))) if str(tid).lstrip("-").isdigit() else None
                if to_type is None:
                    self.fail(400, f"invalid association type id {tid} for associations to be created "
                                   f"from object type {schema.type_id(from_type)}")
                self.check_type(from_type, to_type, tid, spec.get("associationCategory"))
                parsed.append((to_type, self.require(to_type, to_id), int(tid)))
        return parsed

    def inline_json(self, from_type: str, from_id: str, to_names: list[str]) -> dict[str, Any]:
        """The v3 `associations` of an object read: {plural: {results: [{id, type}]}}, only non-empty."""
        out: dict[str, Any] = {}
        for name in to_names:
            to_type = schema.resolve_type(name)
            if to_type is None:
                continue  # unknown names are ignored, as documented
            results = []
            for to_id, tids in self.associated(from_type, from_id, to_type):
                primary = any(TYPES[(from_type, to_type)].get(t) == "Primary" for t in tids)
                results += [{"id": to_id, "type": v3_type_name(from_type, to_type, t, primary)} for t in tids]
            if results:
                out[to_type] = {"results": results}
        return out

    def _paged(self, items: list, after: str | None, limit: int) -> tuple[list, str | None]:
        start = int(after) if after and str(after).isdigit() else 0
        page = items[start:start + limit]
        return page, (str(start + limit) if start + limit < len(items) else None)

    def _v4_to(self, from_type: str, to_type: str, items: list[tuple[str, list[int]]]) -> list[dict]:
        return [{"toObjectId": int(to_id), "associationTypes": self.type_specs(from_type, to_type, tids)}
                for to_id, tids in items]

    def _pair(self, from_name: str, to_name: str) -> tuple[str, str]:
        return self.object_type(from_name), self.object_type(to_name)

    # -- v4 --------------------------------------------------------------------------------------
    def v4_list(self, request: Request, from_name: str, from_id: str, to_name: str) -> Any:
        from_type, to_type = self._pair(from_name, to_name)
        limit = self.int_arg(request, "limit", PAGE, 1, PAGE)
        page, nxt = self._paged(self.associated(from_type, from_id, to_type), request.args.get("after"), limit)
        body: dict[str, Any] = {"results": self._v4_to(from_type, to_type, page)}
        if nxt:
            body["paging"] = {"next": {"after": nxt, "link": self.page_link(request, nxt)}}
        return body

    def v4_put_default(self, request: Request, from_name: str, from_id: str, to_name: str, to_id: str) -> Any:
        from_type, to_type = self._pair(from_name, to_name)
        started = self.now_iso()
        from_id, to_id = self.require(from_type, from_id), self.require(to_type, to_id)
        tid = DEFAULT.get((from_type, to_type))
        if tid is None:
            self.fail(400, f"No default association type exists from {schema.type_id(from_type)} "
                           f"to {schema.type_id(to_type)}")
        self.associate(from_type, from_id, to_type, to_id, tid)
        results = [self._default_json(from_id, to_id, tid), self._default_json(to_id, from_id, INVERSE[tid])]
        return self.batch_reply(results, [], started, 200)

    @staticmethod
    def _default_json(from_id: str, to_id: str, tid: int) -> dict[str, Any]:
        return {"from": {"id": from_id}, "to": {"id": to_id},
                "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": tid}}

    def _labels_json(self, from_type: str, from_id: str, to_type: str, to_id: str) -> dict[str, Any]:
        tids = dict(self.associated(from_type, from_id, to_type)).get(to_id, [])
        labels = [label for t in tids if (label := TYPES[(from_type, to_type)].get(t))]
        return {"fromObjectTypeId": schema.type_id(from_type), "fromObjectId": int(from_id),
                "toObjectTypeId": schema.type_id(to_type), "toObjectId": int(to_id), "labels": labels}

    def v4_put_labeled(self, request: Request, from_name: str, from_id: str, to_name: str, to_id: str) -> Any:
        from_type, to_type = self._pair(from_name, to_name)
        specs = self.body_json(request)
        if not isinstance(specs, list) or not specs:
            self.fail(400, "Invalid input JSON: the body must be a list of association types")
        tids = []
        for spec in specs:
            if not isinstance(spec, dict):
                self.fail(400, "Invalid input JSON: association types must be objects")
            tids.append(self.check_type(from_type, to_type, spec.get("associationTypeId"),
                                        spec.get("associationCategory")))
        from_id, to_id = self.require(from_type, from_id), self.require(to_type, to_id)
        for tid in tids:
            self.associate(from_type, from_id, to_type, to_id, tid)
        return json_response(self._labels_json(from_type, from_id, to_type, to_id), 201)

    def v4_delete(self, request: Request, from_name: str, from_id: str, to_name: str, to_id: str) -> Response:
        from_type, to_type = self._pair(from_name, to_name)
        self.unassociate(from_type, from_id, to_type, to_id)
        return Response(status=204)

    def _batch_read(self, request: Request, from_name: str, to_name: str, render: Any) -> Response:
        """Batch association read shared by v3 and v4: `render(from_type, to_type, item, found)`."""
        from_type, to_type = self._pair(from_name, to_name)
        started, inputs = self.now_iso(), self.batch_inputs(self.body_json(request), 1000)
        results, errors = [], []
        for item in inputs:
            if not isinstance(item, dict) or item.get("id") is None:
                self.fail(400, "Invalid input JSON: each input needs an `id`")
            from_id = str(item["id"])
            found = self.associated(from_type, from_id, to_type)
            if not found:
                errors.append(self._none_found(from_type, from_id, to_type))
                continue
            results.append({"from": {"id": from_id}, **render(from_type, to_type, item, found)})
        return self.batch_reply(results, errors, started, 200)

    def v4_batch_read(self, request: Request, from_name: str, to_name: str) -> Response:
        def render(from_type: str, to_type: str, item: dict, found: Any) -> dict[str, Any]:
            page, nxt = self._paged(found, item.get("after"), PAGE)
            result: dict[str, Any] = {"to": self._v4_to(from_type, to_type, page)}
            if nxt:
                result["paging"] = {"next": {"after": nxt}}
            return result

        return self._batch_read(request, from_name, to_name, render)

    def _none_found(self, from_type: str, from_id: str, to_type: str) -> dict[str, Any]:
        return self.batch_error(
            "OBJECT_NOT_FOUND", f"No {schema.singular(to_type)} is associated with {schema.singular(from_type)} "
                                f"{from_id}.",
            {"fromObjectId": [from_id], "fromObjectType": [schema.singular(from_type)],
             "toObjectType": [schema.singular(to_type)]}, "crm.associations.NO_ASSOCIATIONS_FOUND")

    def _missing_ids(self, from_type: str, to_type: str, pairs: list[tuple[Any, Any]]) -> list[str]:
        missing = [str(f) for f, _ in pairs if self.find(from_type, str(f)) is None]
        return missing + [str(t) for _, t in pairs if self.find(to_type, str(t)) is None]

    def v4_batch_create(self, request: Request, from_name: str, to_name: str) -> Response:
        from_type, to_type = self._pair(from_name, to_name)
        started, inputs = self.now_iso(), self.batch_inputs(self.body_json(request), 100)
        results, errors = [], []
        for item in inputs:
            from_id, to_id, types = self._pair_input(item)
            if not isinstance(types, list) or not types:
                self.fail(400, "Invalid input JSON: each input needs a `types` list")
            tids = [self.check_type(from_type, to_type, t.get("associationTypeId"), t.get("associationCategory"))
                    for t in types if isinstance(t, dict)]
            missing = self._missing_ids(from_type, to_type, [(from_id, to_id)])
            if missing:
                errors.append(self._invalid_ids(missing))
                continue
            for tid in tids:
                self.associate(from_type, str(from_id), to_type, str(to_id), tid)
            results.append(self._labels_json(from_type, str(from_id), to_type, str(to_id)))
        return self.batch_reply(results, errors, started, 201)

    def _pair_input(self, item: Any) -> tuple[Any, Any, Any]:
        if not isinstance(item, dict):
            self.fail(400, "Invalid input JSON: each input must be an object")
        from_id, to_id = (item.get("from") or {}).get("id"), (item.get("to") or {}).get("id")
        if from_id is None or to_id is None:
            self.fail(400, "Invalid input JSON: each input needs `from.id` and `to.id`")
        return from_id, to_id, item.get("types")

    def _invalid_ids(self, missing: list[str]) -> dict[str, Any]:
        return self.batch_error("VALIDATION_ERROR", "One or more associations are invalid",
                                {"INVALID_OBJECT_IDS": missing})

    def v4_batch_default(self, request: Request, from_name: str, to_name: str) -> Response:
        from_type, to_type = self._pair(from_name, to_name)
        started, inputs = self.now_iso(), self.batch_inputs(self.body_json(request), 100)
        tid = DEFAULT.get((from_type, to_type))
        if tid is None:
            self.fail(400, f"No default association type exists from {schema.type_id(from_type)} "
                           f"to {schema.type_id(to_type)}")
        results, errors = [], []
        for item in inputs:
            from_id, to_id, _ = self._pair_input(item)
            missing = self._missing_ids(from_type, to_type, [(from_id, to_id)])
            if missing:
                errors.append(self._invalid_ids(missing))
                continue
            self.associate(from_type, str(from_id), to_type, str(to_id), tid)
            results.append(self._default_json(str(from_id), str(to_id), tid))
        return self.batch_reply(results, errors, started, 200)

    def v4_batch_archive(self, request: Request, from_name: str, to_name: str) -> Response:
        from_type, to_type = self._pair(from_name, to_name)
        for item in self.batch_inputs(self.body_json(request), 2000):
            from_id = (item.get("from") or {}).get("id") if isinstance(item, dict) else None
            targets = item.get("to") if isinstance(item, dict) else None
            if from_id is None or not isinstance(targets, list):
                self.fail(400, "Invalid input JSON: each input needs `from.id` and a `to` list")
            for target in targets:
                if isinstance(target, dict) and target.get("id") is not None:
                    self.unassociate(from_type, str(from_id), to_type, str(target["id"]))
        return Response(status=204)

    def v4_labels(self, request: Request, from_name: str, to_name: str) -> Any:
        from_type, to_type = self._pair(from_name, to_name)
        types = TYPES.get((from_type, to_type), {})
        return {"results": [{"category": "HUBSPOT_DEFINED", "typeId": t, "label": label}
                            for t, label in sorted(types.items())]}

    # -- v3 --------------------------------------------------------------------------------------
    def v3_batch_read(self, request: Request, from_name: str, to_name: str) -> Response:
        def render(from_type: str, to_type: str, item: dict, found: Any) -> dict[str, Any]:
            to = []
            for to_id, tids in found:
                primary = any(TYPES[(from_type, to_type)].get(t) == "Primary" for t in tids)
                to += [{"id": to_id, "type": v3_type_name(from_type, to_type, t, primary)} for t in tids]
            return {"to": to}

        return self._batch_read(request, from_name, to_name, render)

    def v3_batch_create(self, request: Request, from_name: str, to_name: str) -> Response:
        from_type, to_type = self._pair(from_name, to_name)
        started, inputs = self.now_iso(), self.batch_inputs(self.body_json(request), 100)
        names = {v3_type_name(from_type, to_type, t, False): t for t in TYPES.get((from_type, to_type), {})}
        results, errors = [], []
        for item in inputs:
            from_id, to_id, _ = self._pair_input(item)
            tid = names.get(str(item.get("type")))
            if tid is None:
                self.fail(400, f"Invalid association type {item.get('type')!r} from {from_type} to {to_type}")
            missing = self._missing_ids(from_type, to_type, [(from_id, to_id)])
            if missing:
                errors.append(self._invalid_ids(missing))
                continue
            self.associate(from_type, str(from_id), to_type, str(to_id), tid)
            results.append({"from": {"id": str(from_id)}, "to": {"id": str(to_id)}, "type": item["type"]})
        return self.batch_reply(results, errors, started, 201)
