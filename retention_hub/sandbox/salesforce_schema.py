"""The emulated org's schema: describe results, custom fields (Tooling API CustomField), the checks
Salesforce applies to written values, and the error types the emulator's handlers share.

Describe templates live in ``data/salesforce`` (trimmed from recorded describes, see ATTRIBUTION.md):
the standard fields are those the sandbox records carry; custom fields come from
``world.sf_custom_fields`` and are completed from a per-type field template.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

from werkzeug.wrappers import Request

from .emulator import ApiError
from .records import IdMint, parse_time, sf_id_checksum, sf_time
from .soql import IDS, NUMERIC, STRINGY, SoqlError, id18
from .world import World

DATA = Path(__file__).parent / "data" / "salesforce"
PREFIX_TO_OBJECT = {v: k for k, v in IdMint.SF_PREFIX.items()}
ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
STAGE_PROBABILITY = {"Prospecting": 10, "Qualification": 10, "Needs Analysis": 20, "Value Proposition": 50,
                     "Id. Decision Makers": 60, "Perception Analysis": 70, "Proposal/Price Quote": 75,
                     "Negotiation/Review": 90, "Closed Won": 100, "Closed Lost": 0}
# Tooling API CustomField metadata type -> describe type (and which template fills the other keys)
CUSTOM_TYPES = {"Text": "string", "Number": "double", "Currency": "currency", "Percent": "percent",
                "Checkbox": "boolean", "Date": "date", "DateTime": "datetime", "Picklist": "picklist",
                "TextArea": "textarea", "LongTextArea": "longtextarea", "Email": "email", "Url": "url",
                "Phone": "phone"}
SOAP_TYPES = {"string": "xsd:string", "double": "xsd:double", "currency": "xsd:double", "percent": "xsd:double",
              "boolean": "xsd:boolean", "date": "xsd:date", "datetime": "xsd:dateTime", "picklist": "xsd:string",
              "textarea": "xsd:string", "email": "xsd:string", "url": "xsd:string", "phone": "xsd:string"}


class RequestError(Exception):
    """The whole request is refused (Salesforce answers 400 for deserialization problems)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class RecordError(Exception):
    """One record fails (a DML error: reported per record in collections)."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or []

    def as_result(self) -> dict:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


NOT_FOUND = "The requested resource does not exist"


def sf_error(status: int, code: str, message: str, fields: list[str] | None = None) -> ApiError:
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        body["fields"] = fields
    return ApiError(status, [body])


def handler(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the schema's and the SOQL engine's errors into Salesforce's 400 error array."""
    @functools.wraps(fn)
    def wrapper(self: Any, request: Request, **kw: Any) -> Any:
        try:
            return fn(self, request, **kw)
        except RequestError as exc:
            raise sf_error(exc.status, exc.code, exc.message) from None
        except SoqlError as exc:
            raise sf_error(400, exc.code, exc.message) from None
    return wrapper


@functools.lru_cache(maxsize=None)
def load_data(name: str) -> str:
    """A file of data/salesforce as text (read once)."""
    return (DATA / name).read_text()


def _template(name: str, version: str, instance: str) -> Any:
    return json.loads(load_data(name).replace("__VERSION__", version).replace("__INSTANCE__", instance))


def field_templates() -> dict[str, dict]:
    return json.loads(load_data("field_templates.json"))


class OrgSchema:
    """Describe data of the emulated org, read live from the world (implements soql.SoqlSchema)."""

    def __init__(self, world: World) -> None:
        self.world = world
        describes = json.loads(load_data("describe.json"))
        self._standard = {name: {f["name"].lower(): f for f in d["fields"]} for name, d in describes.items()}
        self._names = {name.lower(): name for name in describes}
        self._deletable = {name: bool(d.get("deletable")) for name, d in describes.items()}
        self._templates = field_templates()

    # -- soql.SoqlSchema ---------------------------------------------------------------------------
    def sobject_name(self, name: str) -> str | None:
        return self._names.get(name.lower())

    def field_map(self, sobject: str) -> dict[str, dict]:
        fields = self._standard[sobject]
        custom = self.world.sf_custom_fields.get(sobject)
        if not custom:
            return fields
        merged = dict(fields)
        for stored in custom.values():
            f = self.custom_describe(stored)
            merged[f["name"].lower()] = f
        return merged

    def record(self, sobject: str | None, rec_id: str) -> tuple[str, dict] | None:
        sobject = sobject or PREFIX_TO_OBJECT.get(rec_id[:3])
        rec = self.world.salesforce.get(sobject, {}).get(rec_id) if sobject else None
        return (sobject, rec) if rec is not None and sobject else None

    # -- describe -----------------------------------------------------------------------------------
    def custom_describe(self, stored: dict) -> dict:
        """A stored custom field (maybe partial) completed with its type's template keys."""
        kind = stored.get("_template") or ("longtextarea" if stored.get("type") == "textarea"
                                           and (stored.get("length") or 0) > 255 else stored.get("type"))
        f = copy.deepcopy(self._templates.get(kind, self._templates["string"]))
        f.update({k: v for k, v in stored.items() if not k.startswith("_")})
        f["custom"] = True
        f["soapType"] = SOAP_TYPES.get(f["type"], f.get("soapType"))
        return f

    def describe(self, sobject: str, version: str, instance: str) -> dict:
        d = _template("describe.json", version, instance)[sobject]
        d["fields"] = list(self.field_map(sobject).values())
        return d

    def global_describe(self, version: str) -> dict:
        return _template("global_describe.json", version, "")

    def global_entry(self, sobject: str, version: str) -> dict:
        return next(s for s in self.global_describe(version)["sobjects"] if s["name"] == sobject)

    def deletable(self, sobject: str) -> bool:
        return self._deletable[sobject]

    # -- writes -------------------------------------------------------------------------------------
    def prepare(self, sobject: str, body: dict, creating: bool) -> tuple[dict, list[RecordError]]:
        """Check and convert the fields of one create/update body. Unknown fields and values that
        cannot be deserialized raise RequestError; DML problems come back as RecordErrors."""
        fmap = self.field_map(sobject)
        values: dict[str, Any] = {}
        errors: list[RecordError] = []
        readonly: list[str] = []
        for key, value in body.items():
            if key == "attributes":
                continue
            f = fmap.get(key.lower())
            if f is None:
                raise RequestError("INVALID_FIELD", f"No such column '{key}' on sobject of type {sobject}")
            if not f.get("createable" if creating else "updateable"):
                readonly.append(f["name"])
                continue
            try:
                values[f["name"]] = self.coerce(f, value)
            except RecordError as exc:
                errors.append(exc)
        if readonly:
            errors.insert(0, RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {', '.join(readonly)}. "
                "Please check the security settings of this field and verify that it is read/write for your "
                "profile or permission set.", readonly))
        missing = [f["name"] for f in fmap.values() if _required(f)
                   and (values.get(f["name"]) is None if creating or f["name"] in values else False)]
        if missing:
            errors.append(RecordError("REQUIRED_FIELD_MISSING",
                                      f"Required fields are missing: [{', '.join(missing)}]", missing))
        if creating:
            for f in fmap.values():
                if f["name"] not in values and f.get("createable") and f.get("defaultedOnCreate"):
                    default = _default(f)
                    if default is not None:
                        values[f["name"]] = default
        return values, errors

    def coerce(self, f: dict, value: Any) -> Any:
        """One JSON value -> the stored value for field `f` (Salesforce's checks and messages)."""
        t, name, label = f["type"], f["name"], f.get("label") or f["name"]
        if value is None:
            return False if t == "boolean" else None
        if isinstance(value, (dict, list)):
            token = "START_OBJECT" if isinstance(value, dict) else "START_ARRAY"
            raise _parse_error(t, token, json.dumps(value))
        if t in IDS:
            return self._reference(f, value, label)
        if t in STRINGY:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            if text == "":
                return None
            length = f.get("length") or 0
            if length and len(text) > length:
                raise RecordError("STRING_TOO_LONG", f"{label}: data value too large: {text[:length + 20]} "
                                  f"(max length={length})", [name])
            if t == "email" and not EMAIL_RE.match(text):
                raise RecordError("INVALID_EMAIL_ADDRESS", f"{label}: invalid email address: {text}", [name])
            if t == "picklist" and f.get("restrictedPicklist") and text not in {
                    p["value"] for p in f.get("picklistValues", []) if p.get("active")}:
                raise RecordError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                  f"{label}: bad value for restricted picklist field: {text}", [name])
            return text
        if t in NUMERIC:
            return _number(f, value, label)
        if t == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise _parse_error("boolean", _token(value), value)
        if t == "date":
            if isinstance(value, str):
                try:  # a date, or a datetime whose date part is taken
                    return (parse_time(value).date() if "T" in value else date.fromisoformat(value)).isoformat()
                except ValueError:
                    pass
            raise _parse_error("date", _token(value), value)
        if t == "datetime":
            if isinstance(value, str):
                try:
                    return sf_time(parse_time(value))
                except ValueError:
                    pass
            raise _parse_error("datetime", _token(value), value)
        return value

    def _reference(self, f: dict, value: Any, label: str) -> str:
        if not isinstance(value, str):
            raise _parse_error("id", _token(value), value)
        if not ID_RE.match(value):
            raise RecordError("MALFORMED_ID", f"{label}: id value of incorrect type: {value}", [f["name"]])
        value = id18(value)
        targets = f.get("referenceTo") or []
        if f["type"] == "id":
            return value
        target = PREFIX_TO_OBJECT.get(value[:3])
        if target not in targets:
            raise RecordError("FIELD_INTEGRITY_EXCEPTION", f"{label}: id value of incorrect type: {value}",
                              [f["name"]])
        rec = self.world.salesforce.get(target, {}).get(value)
        if rec is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [f["name"]])
        if rec.get("IsDeleted"):
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [f["name"]])
        return value


def derive(sobject: str, record: dict, changed: dict, now: datetime) -> dict:
    """Fields Salesforce computes from others (names, closed flags), for the changed values."""
    merged = {**record, **changed}
    extra: dict[str, Any] = {}
    if sobject in ("Contact", "User") and ("FirstName" in changed or "LastName" in changed):
        extra["Name"] = " ".join(p for p in (merged.get("FirstName"), merged.get("LastName")) if p) or None
    if sobject == "Opportunity" and "StageName" in changed:
        stage = merged.get("StageName")
        extra["IsClosed"] = stage in ("Closed Won", "Closed Lost")
        extra["IsWon"] = stage == "Closed Won"
        if "Probability" not in changed and stage in STAGE_PROBABILITY:
            extra["Probability"] = float(STAGE_PROBABILITY[stage])
    if sobject == "Case" and "Status" in changed:
        closed = merged.get("Status") == "Closed"
        extra["IsClosed"] = closed
        if closed and not record.get("IsClosed"):
            extra["ClosedDate"] = sf_time(now)
        elif not closed:
            extra["ClosedDate"] = None
    if sobject == "Task" and "Status" in changed:
        extra["IsClosed"] = merged.get("Status") == "Completed"
    return extra


def _required(f: dict) -> bool:
    return (not f.get("nillable", True) and f.get("createable") and not f.get("defaultedOnCreate")
            and f["type"] != "boolean")


def _default(f: dict) -> Any:
    if f["type"] == "boolean":
        return bool(f.get("defaultValue"))
    for p in f.get("picklistValues") or []:
        if p.get("defaultValue") and p.get("active"):
            return p["value"]
    return None


def _token(value: Any) -> str:
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    if isinstance(value, int):
        return "VALUE_NUMBER_INT"
    if isinstance(value, float):
        return "VALUE_NUMBER_FLOAT"
    return "VALUE_STRING"


def _parse_error(kind: str, token: str, value: Any) -> RequestError:
    return RequestError("JSON_PARSER_ERROR", f"Cannot deserialize instance of {kind} from {token} value "
                        f"{value} or request may be missing a required field")


def _number(f: dict, value: Any, label: str) -> float | int:
    t = f["type"]
    if isinstance(value, bool):
        raise _parse_error(t, _token(value), value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _parse_error(t, _token(value), value) from None
    if not math.isfinite(number):
        raise _parse_error(t, _token(value), value)
    if t == "int":
        if not number.is_integer():
            raise _parse_error("int", _token(value), value)
        return int(number)
    precision, scale = f.get("precision") or 18, f.get("scale") or 0
    number = round(number, scale)
    if abs(number) >= 10 ** (precision - scale):
        raise RecordError("NUMBER_OUTSIDE_VALID_RANGE",
                          f"{label}: value outside of valid range on numeric field: {value}", [f["name"]])
    return number


# -- Tooling API: CustomField ---------------------------------------------------------------------
_DEV_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*(?<!_)$")


def tooling_id(sobject: str, stored: dict) -> str:
    """The CustomField record id: minted at creation, or stable for fields the generator defined."""
    if stored.get("_tooling_id"):
        return stored["_tooling_id"]
    digest = hashlib.sha1(f"{sobject}.{stored['name']}".encode()).hexdigest().upper()
    id15 = ("00N5g" + digest)[:15]
    return id15 + sf_id_checksum(id15)


def define_custom_field(world: World, schema: OrgSchema, body: Any) -> tuple[str, dict]:
    """Validate a Tooling API CustomField create body and add the field to the org."""
    if not isinstance(body, dict):
        raise RequestError("JSON_PARSER_ERROR", "The request body must be a JSON object")
    full_name, meta = body.get("FullName"), body.get("Metadata")
    if not isinstance(full_name, str) or "." not in full_name or not isinstance(meta, dict):
        raise RequestError("FIELD_INTEGRITY_EXCEPTION",
                           "FullName (Object.Field__c) and Metadata are required to create a CustomField")
    obj_name, field_name = full_name.split(".", 1)
    sobject = schema.sobject_name(obj_name)
    if sobject is None:
        raise RequestError("FIELD_INTEGRITY_EXCEPTION", f"Cannot find the entity {obj_name} for {full_name}")
    if not field_name.endswith("__c") or not _DEV_NAME.match(field_name[:-3]) or len(field_name) > 43:
        raise RequestError("FIELD_INTEGRITY_EXCEPTION",
                           f"Invalid custom field name '{field_name}': it must begin with a letter, use only "
                           "alphanumerics and single underscores, and end with __c")
    if field_name.lower() in schema.field_map(sobject):
        raise RequestError("DUPLICATE_DEVELOPER_NAME", f"Duplicate Developer Name '{field_name[:-3]}' on "
                           f"{sobject}: a field named {field_name} already exists")
    mtype = meta.get("type")
    if not isinstance(mtype, str) or mtype not in CUSTOM_TYPES:
        raise RequestError("FIELD_INTEGRITY_EXCEPTION", f"Unsupported CustomField type: {mtype!r} (supported: "
                           f"{', '.join(CUSTOM_TYPES)})")
    label = meta.get("label")
    if not isinstance(label, str) or not label.strip():
        raise RequestError("REQUIRED_FIELD_MISSING", "Required field is missing: label")
    kind = CUSTOM_TYPES[mtype]
    f: dict[str, Any] = {"name": field_name, "label": label[:40], "type": "textarea" if kind == "longtextarea"
                         else kind, "custom": True, "_template": kind}
    _size(f, mtype, meta)
    if kind == "picklist":
        value_set = meta.get("valueSet")
        definition = value_set.get("valueSetDefinition") if isinstance(value_set, dict) else None
        values = definition.get("value") if isinstance(definition, dict) else None
        if not isinstance(values, list) or not values or not all(
                isinstance(v, dict) and isinstance(v.get("fullName"), str) for v in values):
            raise RequestError("FIELD_INTEGRITY_EXCEPTION", "Must specify 'valueSet' (valueSetDefinition.value: "
                               "[{fullName, label}]) for a CustomField of type Picklist")
        f["picklistValues"] = [{"active": True, "defaultValue": bool(v.get("default")),
                                "label": str(v.get("label") or v["fullName"]), "validFor": None,
                                "value": v["fullName"]} for v in values]
        # the metadata API's default is an unrestricted value set: only restricted ones refuse other values
        f["restrictedPicklist"] = bool(value_set.get("restricted", False))
    if kind == "boolean":
        f["defaultValue"] = str(meta.get("defaultValue", "false")).lower() == "true"
    if meta.get("required") and kind != "boolean":
        f["nillable"] = False
    for key in ("externalId", "unique", "caseSensitive"):
        if meta.get(key):
            f[key] = True
    if meta.get("externalId"):
        f["idLookup"] = True
    if meta.get("inlineHelpText"):
        f["inlineHelpText"] = str(meta["inlineHelpText"])
    f["_tooling_id"] = world.ids.salesforce("CustomField")
    f["_created"] = sf_time(world.now())
    f["_description"] = meta.get("description")
    world.sf_custom_fields[sobject][field_name] = f
    return sobject, f


def _size(f: dict, mtype: str, meta: dict) -> None:
    """Length / precision / scale rules of the metadata API, copied into the describe keys."""
    def need(key: str) -> int:
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise RequestError("FIELD_INTEGRITY_EXCEPTION", f"Must specify '{key}' for a CustomField of type "
                               f"{mtype}")
        return value
    if mtype == "Text":
        length = need("length")
        if not 1 <= length <= 255:
            raise RequestError("FIELD_INTEGRITY_EXCEPTION", "Length: must be between 1 and 255")
        f.update(length=length, byteLength=3 * length)
    elif mtype == "LongTextArea":
        length = need("length")
        need("visibleLines")
        if not 256 <= length <= 131072:
            raise RequestError("FIELD_INTEGRITY_EXCEPTION", "Length: must be between 256 and 131,072")
        f.update(length=length, byteLength=3 * length)
    elif mtype == "TextArea":
        f.update(length=255, byteLength=765)
    elif mtype in ("Number", "Currency", "Percent"):
        precision, scale = need("precision"), meta.get("scale", 0)
        if not isinstance(scale, int) or not 1 <= precision <= 18 or not 0 <= scale <= precision:
            raise RequestError("FIELD_INTEGRITY_EXCEPTION", "Precision must be 1-18 and scale 0-precision")
        f.update(precision=precision, scale=scale, digits=0)


class ToolingSchema:
    """The Tooling API's CustomField object, queryable with the same SOQL engine."""

    FIELDS = (("Id", "id"), ("DeveloperName", "string"), ("TableEnumOrId", "string"), ("FullName", "string"),
              ("NamespacePrefix", "string"), ("Description", "textarea"), ("Length", "int"),
              ("Precision", "int"), ("Scale", "int"), ("CreatedDate", "datetime"),
              ("LastModifiedDate", "datetime"))

    def __init__(self, world: World) -> None:
        self.world = world
        self._fields = {n.lower(): {"name": n, "type": t, "filterable": True, "sortable": True, "custom": False}
                        for n, t in self.FIELDS}

    def sobject_name(self, name: str) -> str | None:
        return "CustomField" if name.lower() == "customfield" else None

    def field_map(self, sobject: str) -> dict[str, dict]:
        return self._fields

    def record(self, sobject: str | None, rec_id: str) -> tuple[str, dict] | None:
        return None

    def rows(self) -> list[dict]:
        out = []
        for sobject, fields in self.world.sf_custom_fields.items():
            for stored in fields.values():
                created = stored.get("_created") or sf_time(self.world.anchor)
                out.append({"Id": tooling_id(sobject, stored),
                            "DeveloperName": stored["name"][:-3], "TableEnumOrId": sobject,
                            "FullName": f"{sobject}.{stored['name']}", "NamespacePrefix": None,
                            "Description": stored.get("_description"), "Length": stored.get("length"),
                            "Precision": stored.get("precision"), "Scale": stored.get("scale"),
                            "CreatedDate": created, "LastModifiedDate": created, "IsDeleted": False})
        return out

    def find(self, rec_id: str) -> tuple[str, dict] | None:
        """(sobject, stored field) for a CustomField id."""
        for sobject, fields in self.world.sf_custom_fields.items():
            for stored in fields.values():
                if tooling_id(sobject, stored) == rec_id:
                    return sobject, stored
        return None
