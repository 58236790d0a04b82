"""HubSpot's CRM properties API (definitions and groups) and owners API for the emulator."""
from __future__ import annotations

import re
from typing import Any

from werkzeug.wrappers import Request, Response

from . import hubspot_schema as schema
from .emulator import json_response
from .hubspot_common import HubSpotBase

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MetaHandlers(HubSpotBase):
    """Property definitions, property groups and owners (mixed into the emulator)."""

    # -- property groups -------------------------------------------------------------------------
    def groups(self, object_type: str) -> dict[str, dict[str, Any]]:
        name, label = schema.GROUPS[object_type]
        out = {name: schema.group_json(name, label, 0)}
        for gname, group in self.world.hs_property_groups.get(object_type, {}).items():
            out[gname] = schema.group_json(gname, group.get("label", gname), group.get("displayOrder", -1),
                                           bool(group.get("archived", False)))
        return out

    def groups_list(self, request: Request, type_name: str) -> Any:
        object_type = self.object_type(type_name)
        return {"results": [g for g in self.groups(object_type).values() if not g["archived"]]}

    def groups_get(self, request: Request, type_name: str, group_name: str) -> Any:
        group = self.groups(self.object_type(type_name)).get(group_name)
        if group is None or group["archived"]:
            self.fail(404, f"Unable to find property group {group_name}", "OBJECT_NOT_FOUND")
        return group

    def groups_create(self, request: Request, type_name: str) -> Response:
        object_type = self.object_type(type_name)
        body = self.body_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) \
                or not isinstance(body.get("label"), str):
            self.fail(400, "Invalid input JSON: a property group needs a `name` and a `label`")
        name = body["name"].strip()
        if not _NAME.match(name):
            self.fail(400, f"Property group name {name!r} is not valid: use lower-case letters, digits and "
                           f"underscores, starting with a letter")
        if name in self.groups(object_type):
            self.fail(409, f"Property group named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
        order = body.get("displayOrder", -1)
        self.world.hs_property_groups[object_type][name] = {"name": name, "label": body["label"],
                                                            "displayOrder": order, "archived": False}
        self.defs_seq += 1
        return json_response(schema.group_json(name, body["label"], order), 201)

    # -- properties ------------------------------------------------------------------------------
    def props_list(self, request: Request, type_name: str) -> Any:
        object_type = self.object_type(type_name)
        if self.bool_arg(request, "archived"):
            custom = self.world.hs_custom_properties.get(object_type, {})
            return {"results": [schema.normalize_custom(n, d, object_type)
                                for n, d in sorted(custom.items()) if d.get("archived")]}
        return {"results": [d for _, d in sorted(self.definitions(object_type).items())]}

    def props_get(self, request: Request, type_name: str, prop_name: str) -> Any:
        definition = self.definitions(self.object_type(type_name)).get(prop_name)
        if definition is None:
            self.fail(404, f"Unable to find property {prop_name}", "OBJECT_NOT_FOUND")
        return definition

    def props_batch_read(self, request: Request, type_name: str) -> Response:
        object_type = self.object_type(type_name)
        started, inputs = self.now_iso(), self.batch_inputs(self.body_json(request), 100)
        defs = self.definitions(object_type)
        names = [str(i.get("name")) for i in inputs if isinstance(i, dict)]
        missing = [n for n in names if n not in defs]
        errors = [self.batch_error("OBJECT_NOT_FOUND", f"Unable to find properties {', '.join(missing)}",
                                   {"names": missing})] if missing else []
        return self.batch_reply([defs[n] for n in dict.fromkeys(names) if n in defs], errors, started, 200)

    def _check_definition(self, object_type: str, body: dict[str, Any]) -> None:
        ptype, field_type = body.get("type"), body.get("fieldType")
        if ptype not in schema.VALID_FIELD_TYPES:
            self.fail(400, f"Invalid input JSON: type must be one of {', '.join(schema.VALID_FIELD_TYPES)}, "
                           f"got {ptype!r}")
        if field_type not in schema.VALID_FIELD_TYPES[ptype]:
            self.fail(400, f"fieldType {field_type!r} is not valid for a property of type {ptype}")
        if body.get("groupName") not in self.groups(object_type):
            self.fail(400, f"Property group {body.get('groupName')} does not exist")
        options = body.get("options") or []
        if not isinstance(options, list) or not all(isinstance(o, dict) and isinstance(o.get("label"), str)
                                                    and isinstance(o.get("value"), str) for o in options):
            self.fail(400, "Invalid input JSON: options must be a list of objects with a label and a value")
        if ptype == "enumeration" and not options:
            self.fail(400, f"Enumeration property {body.get('name')} needs at least one option")

    def props_create(self, request: Request, type_name: str) -> Response:
        object_type = self.object_type(type_name)
        body = self.body_json(request)
        if not isinstance(body, dict):
            self.fail(400, "Invalid input JSON: the request body must be a JSON object")
        for field in ("name", "label", "type", "fieldType", "groupName"):
            if not isinstance(body.get(field), str) or not body[field].strip():
                self.fail(400, f"Invalid input JSON: missing required field `{field}`")
        name = body["name"].strip()
        if not _NAME.match(name):
            self.fail(400, f"Property name {name!r} is not valid: use lower-case letters, digits and underscores, "
                           f"starting with a letter")
        custom = self.world.hs_custom_properties[object_type]
        if name in self.definitions(object_type) or name in custom:
            self.fail(409, f"Property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
        self._check_definition(object_type, body)
        now = self.now_iso()
        stored = {k: body[k] for k in ("label", "type", "fieldType", "groupName", "description", "options",
                                       "displayOrder", "hasUniqueValue", "hidden", "formField",
                                       "calculationFormula", "referencedObjectType", "externalOptions")
                  if k in body}
        stored.update({"createdAt": now, "updatedAt": now, "archived": False})
        custom[name] = stored
        self.defs_seq += 1
        return json_response(schema.normalize_custom(name, stored, object_type), 201)

    def _custom(self, object_type: str, prop_name: str) -> dict[str, Any]:
        stored = self.world.hs_custom_properties.get(object_type, {}).get(prop_name)
        if stored is None or stored.get("archived"):
            if prop_name in self.definitions(object_type):
                self.fail(400, f"{prop_name} is a HubSpot-defined property; its definition cannot be changed")
            self.fail(404, f"Unable to find property {prop_name}", "OBJECT_NOT_FOUND")
        return stored

    def props_update(self, request: Request, type_name: str, prop_name: str) -> Any:
        object_type = self.object_type(type_name)
        stored = self._custom(object_type, prop_name)
        body = self.body_json(request)
        if not isinstance(body, dict):
            self.fail(400, "Invalid input JSON: the request body must be a JSON object")
        changed = {**stored, **{k: v for k, v in body.items()
                                if k in ("label", "type", "fieldType", "groupName", "description", "options",
                                         "displayOrder", "hidden", "formField")}}
        self._check_definition(object_type, {**changed, "name": prop_name})
        stored.update(changed, updatedAt=self.now_iso())
        self.defs_seq += 1
        return schema.normalize_custom(prop_name, stored, object_type)

    def props_archive(self, request: Request, type_name: str, prop_name: str) -> Response:
        object_type = self.object_type(type_name)
        stored = self._custom(object_type, prop_name)
        stored.update(archived=True, archivedAt=self.now_iso())
        self.defs_seq += 1
        return Response(status=204)

    # -- owners ----------------------------------------------------------------------------------
    @staticmethod
    def owner_json(owner: dict[str, Any]) -> dict[str, Any]:
        out = {"id": str(owner["id"]), "email": owner.get("email"), "type": owner.get("type", "PERSON"),
               "firstName": owner.get("firstName"), "lastName": owner.get("lastName"),
               "userId": owner.get("userId"), "userIdIncludingInactive": owner.get("userId"),
               "createdAt": owner.get("createdAt"), "updatedAt": owner.get("updatedAt"),
               "archived": bool(owner.get("archived", False)), "teams": owner.get("teams") or []}
        return {k: v for k, v in out.items() if v is not None or k in ("firstName", "lastName")}

    def owners_list(self, request: Request) -> Any:
        limit = self.int_arg(request, "limit", 100, 1, 500)
        archived, email = self.bool_arg(request, "archived"), (request.args.get("email") or "").strip().lower()
        owners = sorted((o for o in self.world.hs_owners.values()
                         if bool(o.get("archived", False)) == archived
                         and (not email or str(o.get("email") or "").lower() == email)),
                        key=lambda o: int(o["id"]))
        after = request.args.get("after")
        if after:
            if not after.isdigit():
                self.fail(400, f"Unable to parse paging cursor {after!r}")
            owners = [o for o in owners if int(o["id"]) >= int(after)]
        body: dict[str, Any] = {"results": [self.owner_json(o) for o in owners[:limit]]}
        if len(owners) > limit:
            nxt = str(owners[limit]["id"])
            body["paging"] = {"next": {"after": nxt, "link": self.page_link(request, nxt)}}
        return body

    def owners_get(self, request: Request, owner_id: str) -> Any:
        by_user = (request.args.get("idProperty") or "id") == "userId"
        archived = self.bool_arg(request, "archived")
        for owner in self.world.hs_owners.values():
            key = owner.get("userId") if by_user else owner.get("id")
            if str(key) == owner_id and bool(owner.get("archived", False)) == archived:
                return self.owner_json(owner)
        self.fail(404, "resource not found", "OBJECT_NOT_FOUND")
