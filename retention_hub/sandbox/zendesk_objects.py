"""Zendesk Support object shapes for the sandbox: full JSON objects with Zendesk's defaults, the
side-loads built from them, and validation of the objects clients write.

The world stores only the fields the generator knows (docs/sandbox-records.md); Zendesk sends every
key of its object model, so each serializer here starts from the vendor's defaults and lays the
stored record over them. Keys starting with ``_`` are sandbox-internal and never sent.
"""
from __future__ import annotations

from typing import Any, Iterable

from .emulator import ApiError

TICKET_STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
TICKET_PRIORITIES = ("urgent", "high", "normal", "low")
TICKET_TYPES = ("problem", "incident", "question", "task")
USER_ROLES = ("end-user", "agent", "admin")
API_VIA = {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}}
# Metric-set ids are not stored in the world; derive a stable one per ticket.
METRIC_SET_ID_BASE = 410_000_000_000


def _public(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def _minutes() -> dict:
    return {"calendar": None, "business": None}


def ticket_json(rec: dict, base: str) -> dict:
    """A ticket as GET /api/v2/tickets/{id}.json sends it."""
    stored = _public(rec)
    out: dict[str, Any] = {
        "url": f"{base}/api/v2/tickets/{rec['id']}.json", "id": rec["id"], "external_id": None,
        "via": {"channel": "web", "source": {"from": {}, "to": {}, "rel": None}},
        "created_at": None, "updated_at": None, "generated_timestamp": None, "type": None,
        "subject": None, "raw_subject": None, "description": None, "priority": None, "status": "new",
        "recipient": None, "requester_id": None, "submitter_id": None, "assignee_id": None,
        "organization_id": None, "group_id": None, "collaborator_ids": [], "follower_ids": [],
        "email_cc_ids": [], "forum_topic_id": None, "problem_id": None, "has_incidents": False,
        "is_public": True, "due_at": None, "tags": [], "custom_fields": [], "satisfaction_rating": None,
        "sharing_agreement_ids": [], "custom_status_id": None, "fields": [], "followup_ids": [],
        "ticket_form_id": None, "brand_id": None, "allow_channelback": False, "allow_attachments": True,
        "from_messaging_channel": False,
    }
    out.update(stored)
    if out["raw_subject"] is None:
        out["raw_subject"] = out["subject"]
    if not out["fields"]:
        out["fields"] = list(out["custom_fields"] or [])
    return out


def user_json(rec: dict, base: str) -> dict:
    """A user as GET /api/v2/users/{id}.json sends it (role-dependent defaults)."""
    role = rec.get("role") or "end-user"
    end_user = role == "end-user"
    out: dict[str, Any] = {
        "url": f"{base}/api/v2/users/{rec['id']}.json", "id": rec["id"], "name": None, "email": None,
        "created_at": None, "updated_at": None, "time_zone": "UTC", "iana_time_zone": "Etc/UTC",
        "phone": None, "shared_phone_number": None, "photo": None, "locale_id": 1, "locale": "en-US",
        "organization_id": None, "role": role, "verified": False, "external_id": None, "tags": [],
        "alias": None, "active": True, "shared": False, "shared_agent": False, "last_login_at": None,
        "two_factor_auth_enabled": None if end_user else False, "signature": None, "details": "",
        "notes": "", "role_type": None, "custom_role_id": None, "moderator": not end_user,
        "ticket_restriction": "requested" if end_user else None, "only_private_comments": False,
        "restricted_agent": end_user, "suspended": False, "default_group_id": None,
        "report_csv": not end_user, "user_fields": {},
    }
    out.update(_public(rec))
    return out


def organization_json(rec: dict, base: str) -> dict:
    """An organization as GET /api/v2/organizations/{id}.json sends it."""
    out: dict[str, Any] = {
        "url": f"{base}/api/v2/organizations/{rec['id']}.json", "id": rec["id"], "name": None,
        "shared_tickets": False, "shared_comments": False, "external_id": None, "created_at": None,
        "updated_at": None, "domain_names": [], "details": None, "notes": None, "group_id": None,
        "tags": [], "organization_fields": {},
    }
    out.update(_public(rec))
    return out


def satisfaction_rating_json(rec: dict, base: str) -> dict:
    """A satisfaction rating as GET /api/v2/satisfaction_ratings/{id}.json sends it."""
    out: dict[str, Any] = {
        "url": f"{base}/api/v2/satisfaction_ratings/{rec['id']}.json", "id": rec["id"],
        "assignee_id": None, "group_id": None, "requester_id": None, "ticket_id": None,
        "score": "offered", "created_at": None, "updated_at": None, "comment": None, "reason": None,
        "reason_id": None, "reason_code": None,
    }
    out.update(_public(rec))
    return out


def metric_set_json(ticket: dict, base: str) -> dict:
    """The ticket's `_metric_set` (sandbox-internal) as the `metric_sets` side-load sends it."""
    ms = ticket.get("_metric_set") or {}
    ms_id = ms.get("id") or METRIC_SET_ID_BASE + int(ticket["id"])
    out: dict[str, Any] = {
        "url": f"{base}/api/v2/ticket_metrics/{ms_id}.json", "id": ms_id, "ticket_id": ticket["id"],
        "created_at": ticket.get("created_at"), "updated_at": ticket.get("updated_at"),
        "group_stations": 1 if ticket.get("group_id") else 0,
        "assignee_stations": 1 if ticket.get("assignee_id") else 0, "reopens": 0, "replies": 0,
        "assignee_updated_at": None, "requester_updated_at": None,
        "status_updated_at": ticket.get("updated_at"), "initially_assigned_at": None,
        "assigned_at": None, "solved_at": None, "latest_comment_added_at": ticket.get("updated_at"),
        "custom_status_updated_at": None, "reply_time_in_minutes": _minutes(),
        "first_resolution_time_in_minutes": _minutes(), "full_resolution_time_in_minutes": _minutes(),
        "agent_wait_time_in_minutes": _minutes(), "requester_wait_time_in_minutes": _minutes(),
        "on_hold_time_in_minutes": _minutes(),
    }
    out.update({k: v for k, v in ms.items() if k != "id"})
    if out["solved_at"] and out["first_resolution_time_in_minutes"] == _minutes():
        out["first_resolution_time_in_minutes"] = dict(out["full_resolution_time_in_minutes"])
    return out


def parse_include(raw: str | None) -> set[str]:
    """`include=users,organizations` -> {"users", "organizations"} (unknown names are ignored)."""
    return {part.strip() for part in (raw or "").split(",") if part.strip()}


def ticket_sideloads(tickets: Iterable[dict], include: set[str], zendesk: dict, base: str,
                     me: dict | None = None) -> dict[str, list]:
    """The side-loads Zendesk adds next to a list of tickets."""
    tickets = list(tickets)
    out: dict[str, list] = {}
    if "users" in include:
        ids: list[int] = []
        for t in tickets:
            for key in ("requester_id", "submitter_id", "assignee_id"):
                if t.get(key) is not None and t[key] not in ids:
                    ids.append(t[key])
        users = []
        for uid in ids:
            if uid in zendesk["users"]:
                users.append(user_json(zendesk["users"][uid], base))
            elif me is not None and uid == me["id"]:
                users.append(user_json(me, base))
        out["users"] = users
    if "organizations" in include:
        out["organizations"] = _organizations_of(tickets, zendesk, base)
    if "metric_sets" in include:
        out["metric_sets"] = [metric_set_json(t, base) for t in tickets]
    return out


def user_sideloads(users: Iterable[dict], include: set[str], zendesk: dict, base: str) -> dict[str, list]:
    if "organizations" not in include:
        return {}
    return {"organizations": _organizations_of(list(users), zendesk, base)}


def _organizations_of(records: list[dict], zendesk: dict, base: str) -> list[dict]:
    seen: list[int] = []
    for rec in records:
        oid = rec.get("organization_id")
        if oid is not None and oid not in seen and oid in zendesk["organizations"]:
            seen.append(oid)
    return [organization_json(zendesk["organizations"][o], base) for o in seen]


def audit_json(audit_id: int, ticket_id: int, author_id: int, created_at: str,
               changes: list[tuple[str, Any, Any]], created: bool, comment: dict | None) -> dict:
    """The audit Zendesk returns next to a created or updated ticket."""
    events: list[dict] = []
    if comment:
        events.append({"id": audit_id + 1, "type": "Comment", "author_id": author_id,
                       "body": comment.get("body") or comment.get("html_body") or "",
                       "public": bool(comment.get("public", True)), "attachments": [],
                       "audit_id": audit_id})
    for i, (field_name, value, previous) in enumerate(changes, start=len(events) + 1):
        event = {"id": audit_id + i, "type": "Create" if created else "Change",
                 "field_name": field_name, "value": value}
        if not created:
            event["previous_value"] = previous
        events.append(event)
    return {"id": audit_id, "ticket_id": ticket_id, "created_at": created_at, "author_id": author_id,
            "metadata": {"system": {}, "custom": {}}, "via": API_VIA, "events": events}


# -- validation of written objects ------------------------------------------------------------
def record_invalid(details: dict[str, list[dict]]) -> ApiError:
    return ApiError(422, {"error": "RecordInvalid", "description": "Record validation errors",
                          "details": details})


class Errors:
    """Collects Zendesk-style validation details: {field: [{description, error}]}."""

    def __init__(self) -> None:
        self.details: dict[str, list[dict]] = {}

    def add(self, field: str, label: str, message: str, code: str) -> None:
        self.details.setdefault(field, []).append({"description": f"{label}: {message}", "error": code})

    def raise_if_any(self) -> None:
        if self.details:
            raise record_invalid(self.details)


def normalize_tags(value: Any) -> list[str] | None:
    """Zendesk takes tags as a list or a space/comma-separated string; stores them lowercased."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        return None
    out: list[str] = []
    for tag in value:
        tag = tag.strip().lower().replace(" ", "_")
        if tag and tag not in out:
            out.append(tag)
    return out


def _choice(errors: Errors, data: dict, field: str, label: str, choices: tuple, out: dict,
            nullable: bool = True) -> None:
    if field not in data:
        return
    value = data[field]
    if value is None and nullable:
        out[field] = None
    elif isinstance(value, str) and value.lower() in choices:
        out[field] = value.lower()
    else:
        errors.add(field, label, "is not valid", "InvalidValue")


def _reference(errors: Errors, data: dict, field: str, label: str, table: dict, out: dict,
               extra_ids: tuple = ()) -> None:
    if field not in data:
        return
    value = data[field]
    if value is None:
        out[field] = None
    elif isinstance(value, bool) or not isinstance(value, int) or (value not in table and value not in extra_ids):
        errors.add(field, label, "is invalid", "InvalidValue")
    else:
        out[field] = value


def validate_ticket(data: Any, zendesk: dict, creating: bool, me_id: int,
                    current: dict | None = None) -> tuple[dict, dict | None]:
    """Check a `{"ticket": {...}}` payload's ticket; return (fields to store, comment)."""
    errors, out = Errors(), {}
    if not isinstance(data, dict):
        raise ApiError(400, {"error": "InvalidValue", "description": "ticket must be a JSON object"})
    if current is not None and current.get("status") == "closed":
        errors.add("status", "Status", "closed prevents ticket update", "ClosedPrevents")
        errors.raise_if_any()
    _choice(errors, data, "status", "Status", TICKET_STATUSES, out, nullable=False)
    _choice(errors, data, "priority", "Priority", TICKET_PRIORITIES, out)
    _choice(errors, data, "type", "Type", TICKET_TYPES, out)
    me = (me_id,)
    _reference(errors, data, "requester_id", "Requester", zendesk["users"], out, me)
    _reference(errors, data, "submitter_id", "Submitter", zendesk["users"], out, me)
    _reference(errors, data, "assignee_id", "Assignee", zendesk["users"], out, me)
    _reference(errors, data, "organization_id", "Organization", zendesk["organizations"], out)
    aid = out.get("assignee_id")
    if aid is not None and aid in zendesk["users"] and zendesk["users"][aid].get("role") == "end-user":
        errors.add("assignee_id", "Assignee", "is not an agent", "InvalidValue")
    if "group_id" in data:
        if data["group_id"] is None or (isinstance(data["group_id"], int) and not isinstance(data["group_id"], bool)):
            out["group_id"] = data["group_id"]
        else:
            errors.add("group_id", "Group", "is invalid", "InvalidValue")
    for field, label in (("subject", "Subject"), ("external_id", "External"), ("due_at", "Due at")):
        if field in data:
            if data[field] is None or isinstance(data[field], str):
                out[field] = data[field]
            else:
                errors.add(field, label, "is invalid", "InvalidValue")
    for field in ("tags", "additional_tags", "remove_tags"):
        if field in data:
            tags = normalize_tags(data[field])
            if tags is None:
                errors.add(field, "Tags", "is invalid", "InvalidValue")
            else:
                out[field] = tags
    if "custom_fields" in data:
        fields = data["custom_fields"]
        if isinstance(fields, list) and all(isinstance(f, dict) and "id" in f for f in fields):
            out["custom_fields"] = [{"id": f["id"], "value": f.get("value")} for f in fields]
        else:
            errors.add("custom_fields", "Custom fields", "is invalid", "InvalidValue")
    comment = data.get("comment")
    if comment is not None and not (isinstance(comment, dict) and isinstance(
            comment.get("body") or comment.get("html_body"), str)):
        errors.add("comment", "Comment", "is invalid", "InvalidValue")
        comment = None
    if creating:
        body = (comment or {}).get("body") or (comment or {}).get("html_body") or data.get("description")
        if not isinstance(body, str) or not body.strip():
            errors.details.setdefault("base", []).append(
                {"description": "Description: cannot be blank", "error": "BlankValue",
                 "field_key": "description"})
        else:
            out["description"] = body
        if out.get("status") == "closed":
            errors.add("status", "Status", "closed is not valid for a new ticket", "InvalidValue")
    errors.raise_if_any()
    return out, comment


def validate_organization(data: Any, zendesk: dict, creating: bool, org_id: int | None = None) -> dict:
    """Check an `{"organization": {...}}` payload's organization; return the fields to store."""
    errors, out = Errors(), {}
    if not isinstance(data, dict):
        raise ApiError(400, {"error": "InvalidValue", "description": "organization must be a JSON object"})
    if "name" in data or creating:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.add("name", "Name", "cannot be blank", "BlankValue")
        else:
            wanted = name.strip().lower()
            # Writes are rare, so a scan of the organizations is fine here.
            if any(str(o.get("name") or "").strip().lower() == wanted and oid != org_id
                   for oid, o in zendesk["organizations"].items()):
                errors.add("name", "Name", "has already been taken", "DuplicateValue")
            out["name"] = name.strip()
    for field in ("details", "notes", "external_id"):
        if field in data:
            if data[field] is None or isinstance(data[field], str):
                out[field] = data[field]
            else:
                errors.add(field, field.replace("_", " ").capitalize(), "is invalid", "InvalidValue")
    for field in ("shared_tickets", "shared_comments"):
        if field in data:
            if isinstance(data[field], bool):
                out[field] = data[field]
            else:
                errors.add(field, field.replace("_", " ").capitalize(), "is invalid", "InvalidValue")
    if "domain_names" in data:
        names = data["domain_names"]
        if isinstance(names, str):
            names = names.replace(",", " ").split()
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            out["domain_names"] = [n.strip().lower() for n in names if n.strip()]
        else:
            errors.add("domain_names", "Domain names", "is invalid", "InvalidValue")
    if "tags" in data:
        tags = normalize_tags(data["tags"])
        if tags is None:
            errors.add("tags", "Tags", "is invalid", "InvalidValue")
        else:
            out["tags"] = tags
    if "group_id" in data:
        if data["group_id"] is None or (isinstance(data["group_id"], int) and not isinstance(data["group_id"], bool)):
            out["group_id"] = data["group_id"]
        else:
            errors.add("group_id", "Group", "is invalid", "InvalidValue")
    if "organization_fields" in data:
        if isinstance(data["organization_fields"], dict):
            out["organization_fields"] = dict(data["organization_fields"])
        else:
            errors.add("organization_fields", "Organization fields", "is invalid", "InvalidValue")
    errors.raise_if_any()
    return out
