"""HubSpot CRM object types, property definitions and property-value validation for the emulator.

Pure functions and tables, no HTTP. The emulator owns the built-in definitions of every property
the sandbox records carry (docs/sandbox-records.md); custom properties and groups live in
`world.hs_custom_properties` / `world.hs_property_groups`. Values follow HubSpot's write rules:
numbers must be numbers, date properties midnight UTC (epoch millis or YYYY-MM-DD), enumerations
one of their options, and unknown or read-only names are rejected.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from .records import hs_time, parse_time

# plural name -> (objectTypeId, singular, upper-case name used in error messages)
OBJECT_TYPES: dict[str, tuple[str, str, str]] = {
    "companies": ("0-2", "company", "COMPANY"),
    "contacts": ("0-1", "contact", "CONTACT"),
    "deals": ("0-3", "deal", "DEAL"),
    "tickets": ("0-5", "ticket", "TICKET"),
    "tasks": ("0-27", "task", "TASK"),
}
_ALIASES = {alias: plural for plural, (type_id, singular, _) in OBJECT_TYPES.items()
            for alias in (plural, singular, type_id)}

# The properties HubSpot returns when a read names none (its search guide's default-property table).
DEFAULT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "deals": ("amount", "closedate", "createdate", "dealname", "dealstage", "hs_lastmodifieddate",
              "hs_object_id", "pipeline"),
    "tickets": ("content", "createdate", "hs_lastmodifieddate", "hs_object_id", "hs_pipeline",
                "hs_pipeline_stage", "hs_ticket_category", "hs_ticket_priority", "subject"),
    "tasks": ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
}
# ... and the ones it adds to any explicit `properties` list.
ALWAYS_PROPERTIES: dict[str, tuple[str, ...]] = {
    t: (("hs_createdate" if t == "tasks" else "createdate"),
        ("lastmodifieddate" if t == "contacts" else "hs_lastmodifieddate"), "hs_object_id")
    for t in OBJECT_TYPES
}
# Free-text `query` in search looks at these (HubSpot's "default searchable properties").
SEARCHABLE_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": ("firstname", "lastname", "email", "phone", "hs_additional_emails", "fax", "mobilephone",
                 "company"),
    "companies": ("name", "domain", "website", "phone"),
    "deals": ("dealname", "pipeline", "dealstage", "description", "dealtype"),
    "tickets": ("subject", "content", "hs_pipeline_stage", "hs_ticket_category"),
    "tasks": ("hs_task_subject", "hs_task_body"),
}
PORTAL_ID = 24681357  # the sandbox "account"; HubSpot echoes its portal id in validation errors
DEFINED_AT = "2019-08-06T02:41:08.029Z"  # createdAt/updatedAt of built-in definitions


def resolve_type(name: str) -> str | None:
    """`companies`, `company` or `0-2` -> `companies` (None when unknown)."""
    return _ALIASES.get(name.strip().lower())


def type_id(object_type: str) -> str:
    return OBJECT_TYPES[object_type][0]


def singular(object_type: str) -> str:
    return OBJECT_TYPES[object_type][1]


def upper_name(object_type: str) -> str:
    return OBJECT_TYPES[object_type][2]


# -- built-in definitions -------------------------------------------------------------------------
def _opts(*pairs: str) -> list[tuple[str, str]]:
    """'value=Label' strings -> [(value, label)]."""
    return [tuple(p.split("=", 1)) if "=" in p else (p, p.replace("_", " ").title())  # type: ignore[misc]
            for p in pairs]


LIFECYCLE = _opts("subscriber=Subscriber", "lead=Lead", "marketingqualifiedlead=Marketing Qualified Lead",
                  "salesqualifiedlead=Sales Qualified Lead", "opportunity=Opportunity", "customer=Customer",
                  "evangelist=Evangelist", "other=Other")
# A part of HubSpot's standard industry list; values the world uses are added (see `options_for`).
INDUSTRY = _opts("ACCOUNTING", "AIRLINES_AVIATION", "APPAREL_FASHION", "AUTOMOTIVE", "BANKING",
                 "BIOTECHNOLOGY", "BROADCAST_MEDIA", "CHEMICALS", "COMPUTER_HARDWARE", "COMPUTER_SOFTWARE",
                 "CONSTRUCTION", "CONSUMER_ELECTRONICS", "CONSUMER_GOODS", "CONSUMER_SERVICES",
                 "E_LEARNING", "EDUCATION_MANAGEMENT", "ENTERTAINMENT", "FINANCIAL_SERVICES",
                 "FOOD_BEVERAGES", "GOVERNMENT_ADMINISTRATION", "HEALTH_WELLNESS_AND_FITNESS",
                 "HOSPITAL_HEALTH_CARE", "HOSPITALITY", "INFORMATION_TECHNOLOGY_AND_SERVICES", "INSURANCE",
                 "INTERNET", "LOGISTICS_AND_SUPPLY_CHAIN", "MANAGEMENT_CONSULTING", "MARKETING_AND_ADVERTISING",
                 "MEDICAL_DEVICES", "NONPROFIT_ORGANIZATION_MANAGEMENT", "PHARMACEUTICALS", "REAL_ESTATE",
                 "RETAIL", "STAFFING_AND_RECRUITING", "TELECOMMUNICATIONS", "TRANSPORTATION_TRUCKING_RAILROAD",
                 "UTILITIES", "WHOLESALE")
OWNER_REF = {"referencedObjectType": "OWNER", "externalOptions": True}
READ_ONLY = {"readOnly": True}

# name -> (label, type, fieldType, options, extra)
_Def = tuple[str, str, str, list[tuple[str, str]], dict[str, Any]]
_COMMON: dict[str, _Def] = {
    "hs_object_id": ("Record ID", "number", "number", [], READ_ONLY),
    "createdate": ("Create Date", "datetime", "date", [], {}),
    "hs_lastmodifieddate": ("Last Modified Date", "datetime", "date", [], READ_ONLY),
    "hubspot_owner_id": ("Owner", "enumeration", "select", [], OWNER_REF),
}
_BUILTIN: dict[str, dict[str, _Def]] = {
    "companies": {
        "name": ("Company name", "string", "text", [], {}),
        "domain": ("Company Domain Name", "string", "text", [], {"unique": True}),
        "website": ("Website URL", "string", "text", [], {}),
        "phone": ("Phone Number", "string", "phonenumber", [], {}),
        "country": ("Country/Region", "string", "text", [], {}),
        "industry": ("Industry", "enumeration", "select", INDUSTRY, {}),
        "numberofemployees": ("Number of Employees", "number", "number", [], {}),
        "annualrevenue": ("Annual Revenue", "number", "number", [], {}),
        "lifecyclestage": ("Lifecycle Stage", "enumeration", "radio", LIFECYCLE, {}),
        "salesforceaccountid": ("Salesforce Account ID", "string", "text", [], {}),
    },
    "contacts": {
        "lastmodifieddate": ("Last Modified Date", "datetime", "date", [], READ_ONLY),
        "email": ("Email", "string", "text", [], {"unique": True}),
        "firstname": ("First Name", "string", "text", [], {}),
        "lastname": ("Last Name", "string", "text", [], {}),
        "jobtitle": ("Job Title", "string", "text", [], {}),
        "phone": ("Phone Number", "string", "phonenumber", [], {}),
        "mobilephone": ("Mobile Phone Number", "string", "phonenumber", [], {}),
        "company": ("Company Name", "string", "text", [], {}),
        "hs_email_optout": ("Unsubscribed from all email", "bool", "booleancheckbox",
                            _opts("true=True", "false=False"), {}),
        "lifecyclestage": ("Lifecycle Stage", "enumeration", "radio", LIFECYCLE, {}),
    },
    "deals": {
        "dealname": ("Deal Name", "string", "text", [], {}),
        "amount": ("Amount", "number", "number", [], {}),
        "closedate": ("Close Date", "datetime", "date", [], {}),
        "dealstage": ("Deal Stage", "enumeration", "radio",
                      _opts("appointmentscheduled=Appointment Scheduled", "qualifiedtobuy=Qualified To Buy",
                            "presentationscheduled=Presentation Scheduled",
                            "decisionmakerboughtin=Decision Maker Bought-In", "contractsent=Contract Sent",
                            "closedwon=Closed Won", "closedlost=Closed Lost"), {}),
        "pipeline": ("Pipeline", "enumeration", "select", _opts("default=Sales Pipeline"), {}),
        "dealtype": ("Deal Type", "enumeration", "radio",
                     _opts("newbusiness=New Business", "existingbusiness=Existing Business"), {}),
        "description": ("Deal Description", "string", "textarea", [], {}),
    },
    "tickets": {
        "subject": ("Ticket name", "string", "text", [], {}),
        "content": ("Ticket description", "string", "textarea", [], {}),
        "hs_pipeline": ("Pipeline", "enumeration", "select", _opts("0=Support Pipeline"), {}),
        "hs_pipeline_stage": ("Ticket status", "enumeration", "radio",
                              _opts("1=New", "2=Waiting on contact", "3=Waiting on us", "4=Closed"), {}),
        "hs_ticket_priority": ("Priority", "enumeration", "select",
                               _opts("LOW=Low", "MEDIUM=Medium", "HIGH=High", "URGENT=Urgent"), {}),
        "hs_ticket_category": ("Category", "enumeration", "checkbox",
                               _opts("PRODUCT_ISSUE=Product issue", "BILLING_ISSUE=Billing issue",
                                     "FEATURE_REQUEST=Feature request", "GENERAL_INQUIRY=General inquiry"), {}),
        "closed_date": ("Close date", "datetime", "date", [], {}),
    },
    "tasks": {
        "hs_createdate": ("Created at", "datetime", "date", [], READ_ONLY),
        "hs_task_subject": ("Task Title", "string", "text", [], {}),
        "hs_task_body": ("Notes", "string", "html", [], {}),
        "hs_task_status": ("Task Status", "enumeration", "select",
                           _opts("NOT_STARTED=Not started", "IN_PROGRESS=In progress", "WAITING=Waiting",
                                 "COMPLETED=Completed", "DEFERRED=Deferred"), {}),
        "hs_task_priority": ("Priority", "enumeration", "select",
                             _opts("NONE=None", "LOW=Low", "MEDIUM=Medium", "HIGH=High"), {}),
        "hs_task_type": ("Task Type", "enumeration", "select",
                         _opts("TODO=To-do", "CALL=Call", "EMAIL=Email", "LINKED_IN=LinkedIn",
                               "MEETING=Meeting"), {}),
        "hs_timestamp": ("Due date", "datetime", "date", [], {}),
    },
}
GROUPS: dict[str, tuple[str, str]] = {  # the built-in group every built-in property sits in
    "companies": ("companyinformation", "Company information"),
    "contacts": ("contactinformation", "Contact information"),
    "deals": ("dealinformation", "Deal information"),
    "tickets": ("ticketinformation", "Ticket information"),
    "tasks": ("taskinformation", "Task information"),
}
VALID_FIELD_TYPES = {
    "string": {"text", "textarea", "html", "phonenumber", "file"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox"},
    "bool": {"booleancheckbox"},
}


def builtin_names(object_type: str) -> list[str]:
    return sorted({**_COMMON, **_BUILTIN[object_type]})


def _option_json(value: str, label: str, order: int) -> dict[str, Any]:
    return {"label": label, "value": value, "displayOrder": order, "hidden": False, "description": ""}


def builtin_definition(object_type: str, name: str, extra_options: Iterable[str] = (),
                       owner_options: list[tuple[str, str]] | None = None) -> dict[str, Any] | None:
    """The v3 property JSON of a built-in property (None when `name` is not built in)."""
    spec = _BUILTIN[object_type].get(name) or _COMMON.get(name)
    if spec is None:
        return None
    label, ptype, field_type, options, extra = spec
    opts = list(owner_options or []) if name == "hubspot_owner_id" else list(options)
    known = {v for v, _ in opts}
    opts += [(v, v) for v in sorted(set(extra_options) - known)]
    group, _ = GROUPS[object_type]
    return {
        "updatedAt": DEFINED_AT, "createdAt": DEFINED_AT, "name": name, "label": label, "type": ptype,
        "fieldType": field_type, "description": "", "groupName": group,
        "options": [_option_json(v, lab, i) for i, (v, lab) in enumerate(opts)],
        "displayOrder": -1, "calculated": False, "externalOptions": bool(extra.get("externalOptions")),
        "hasUniqueValue": bool(extra.get("unique")), "hidden": False, "hubspotDefined": True,
        **({"referencedObjectType": extra["referencedObjectType"]} if "referencedObjectType" in extra else {}),
        "modificationMetadata": {"archivable": False, "readOnlyDefinition": True,
                                 "readOnlyValue": bool(extra.get("readOnly"))},
        "formField": not extra.get("readOnly"), "dataSensitivity": "non_sensitive",
    }


def normalize_custom(name: str, definition: dict[str, Any], object_type: str) -> dict[str, Any]:
    """Fill a stored custom definition (possibly partial, e.g. written by the generator) to full JSON."""
    out: dict[str, Any] = {
        "updatedAt": DEFINED_AT, "createdAt": DEFINED_AT, "name": name, "label": name, "type": "string",
        "fieldType": "text", "description": "", "groupName": GROUPS[object_type][0], "options": [],
        "displayOrder": -1, "calculated": False, "externalOptions": False, "hasUniqueValue": False,
        "hidden": False, "hubspotDefined": False, "formField": False, "dataSensitivity": "non_sensitive",
        "modificationMetadata": {"archivable": True, "readOnlyDefinition": False, "readOnlyValue": False},
    }
    out.update(definition)
    out["name"] = name
    out["options"] = [{"label": o.get("label", o.get("value")), "value": o.get("value"),
                       "displayOrder": o.get("displayOrder", i), "hidden": bool(o.get("hidden", False)),
                       "description": o.get("description", "")}
                      for i, o in enumerate(out.get("options") or [])]
    if out["type"] == "bool" and not out["options"]:
        out["options"] = [_option_json("true", "True", 0), _option_json("false", "False", 1)]
    return out


def group_json(name: str, label: str, order: int = -1, archived: bool = False) -> dict[str, Any]:
    return {"name": name, "label": label, "displayOrder": order, "archived": archived}


# -- value validation -----------------------------------------------------------------------------
@dataclass
class PropertyError:
    name: str
    code: str
    message: str

    def as_result(self) -> dict[str, Any]:
        return {"isValid": False, "message": self.message, "error": self.code, "name": self.name,
                "localizedErrorMessage": self.message, "portalId": PORTAL_ID}


def validation_body(errors: list[PropertyError], correlation_id: str,
                    context: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """HubSpot's 400: the per-property results JSON-encoded inside `message`, repeated in `errors`."""
    results = json.dumps([e.as_result() for e in errors], separators=(",", ":"))
    body: dict[str, Any] = {
        "status": "error", "message": f"Property values were not valid: {results}",
        "correlationId": correlation_id, "category": "VALIDATION_ERROR",
        "errors": [{"message": e.message, "code": e.code, "context": {"propertyName": [e.name]}}
                   for e in errors],
    }
    if context:
        body["context"] = context
    return body


def _millis(value: str) -> int | None:
    """Epoch milliseconds from a millis string, an ISO datetime or a YYYY-MM-DD date."""
    text = value.strip()
    if re.fullmatch(r"-?\d+(\.0+)?", text):
        return int(float(text))
    try:
        return int(parse_time(text).timestamp() * 1000)
    except ValueError:
        return None


def to_millis(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    return _millis(str(value))


def _number(text: str) -> str | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return text.strip() if math.isfinite(number) else None


def _options_message(value: str, definition: dict[str, Any]) -> str:
    listed = ", ".join(f'label: "{o["label"]}"\nvalue: "{o["value"]}"\ndisplay_order: {o["displayOrder"]}\n'
                       f'hidden: false\nread_only: false\n' for o in definition["options"])
    return f"{value} was not one of the allowed options: [{listed}]"


def coerce_value(name: str, raw: Any, definition: dict[str, Any]) -> tuple[str | None, PropertyError | None]:
    """One property value as HubSpot stores it (a string, or None to clear), or the error it gives."""
    if raw is None or raw == "":
        return None, None  # an empty value clears the property
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    elif isinstance(raw, float) and raw.is_integer():
        text = str(int(raw))  # JSON 17.0 is stored as "17", as HubSpot does
    elif isinstance(raw, (dict, list)):
        return None, PropertyError(name, "INVALID_PROPERTY_VALUE", f"{json.dumps(raw)} is not a valid value")
    else:
        text = str(raw)
    ptype = definition["type"]
    if ptype != "string" and text != text.strip():
        return None, PropertyError(name, "LEADING_TRAILING_WHITESPACE",
                                   f'"{text}" includes leading or trailing whitespace.')
    if ptype == "number":
        number = _number(text)
        if number is None:
            return None, PropertyError(name, "INVALID_LONG", f"{text} was not a valid long.")
        return number, None
    if ptype == "date":
        millis = _millis(text)
        if millis is None:
            return None, PropertyError(name, "INVALID_DATE", f"{text} is not a valid date.")
        if millis % 86_400_000:
            at = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
            return None, PropertyError(
                name, "INVALID_DATE",
                f"{millis} is at {at.hour}:{at.minute}:{at.second}.{millis % 1000} UTC, not midnight!")
        return str(millis), None
    if ptype == "datetime":
        millis = _millis(text)
        if millis is None:
            return None, PropertyError(name, "INVALID_DATETIME", f"{text} is not a valid datetime.")
        return hs_time(datetime.fromtimestamp(millis / 1000, tz=timezone.utc)), None
    if ptype in ("enumeration", "bool"):
        allowed = {o["value"] for o in definition["options"]}
        if ptype == "bool":
            text = text.lower() if text.lower() in ("true", "false") else text
        if definition.get("externalOptions") and not allowed:
            return text, None  # options resolved elsewhere (owners) and none known here
        values = text.split(";") if definition["fieldType"] == "checkbox" else [text]
        for value in values:
            if value not in allowed:
                return None, PropertyError(name, "INVALID_OPTION", _options_message(value, definition))
        return text, None
    return text, None


def read_only_error(name: str) -> PropertyError:
    return PropertyError(name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.')


def missing_error(name: str) -> PropertyError:
    return PropertyError(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
