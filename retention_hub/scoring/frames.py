"""The store's canonical records as typed pandas frames, each row attributed to a unified account.

This is the scoring stage's input (see DESIGN.md, "each stage's input and output is a table"). Every
frame carries `unified_id`; rows whose account reference is unknown to identity are dropped and
counted in `Frames.unattributed`. Times are UTC pandas timestamps, amounts integers in minor units.

Schemas (columns beyond `unified_id`):
- accounts: name, country, segment, parent_unified_id, owner_id (a CRM owner: the CSM), created_at
- subscriptions: source_id, status, mrr_minor, contract_mrr_minor, quantity, currency, interval, plan_name,
  start, canceled_at, ended_at, cancel_at, cancellation_feedback
- invoices: created_at, amount_minor, amount_paid_minor, status, attempted, paid, attempt_count,
  payment_failed, paid_at, billing_reason
- tickets: source, source_id, created_at, solved_at, priority (low|normal|high|urgent), escalated, satisfaction
  (good|bad|None), resolution_minutes, subject, tags (a list)
- ratings: created_at, score (good|bad)
- renewals: source, close_date, amount_minor, is_closed, is_won, type
- activities: source, at (due date, else last change), completed
- contacts: source, created_at (first seen), updated_at, deleted
- usage: source, day, metric, value
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from ..sync.store import Store

AccountMap = dict[tuple[str, str], str]


@dataclass
class Frames:
    accounts: pd.DataFrame
    subscriptions: pd.DataFrame
    invoices: pd.DataFrame
    tickets: pd.DataFrame
    ratings: pd.DataFrame
    renewals: pd.DataFrame
    activities: pd.DataFrame
    contacts: pd.DataFrame
    usage: pd.DataFrame
    unattributed: dict[str, int] = field(default_factory=dict)  # kind -> rows with no unified account


# kind -> the payload fields a frame keeps (under the same names)
COLUMNS: dict[str, tuple[str, ...]] = {
    "subscriptions": ("status", "mrr_minor", "contract_mrr_minor", "quantity", "currency", "interval", "plan_name",
                      "start", "canceled_at", "ended_at", "cancel_at", "cancellation_feedback"),
    "invoices": ("created_at", "amount_minor", "amount_paid_minor", "status", "attempted", "paid", "attempt_count",
                 "payment_failed", "paid_at", "billing_reason"),
    "tickets": ("created_at", "solved_at", "priority", "escalated", "satisfaction", "resolution_minutes", "subject",
                "tags"),
    "ratings": ("created_at", "score"),
    "renewals": ("close_date", "amount_minor", "is_closed", "is_won", "type"),
}
TIMES = {"start", "canceled_at", "ended_at", "cancel_at", "created_at", "paid_at", "solved_at", "close_date",
         "at", "updated_at", "day"}


def _ref(payload: dict, *keys: str) -> str | None:
    for key in keys:
        value = payload.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _times(frame: pd.DataFrame) -> pd.DataFrame:
    for column in TIMES & set(frame.columns):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce", format="mixed")
    return frame


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return _times(pd.DataFrame(rows, columns=columns))


class Loader:
    """Reads the store once per kind and attributes each row to its unified account."""

    def __init__(self, store: Store, accounts: AccountMap, people: AccountMap | None = None) -> None:
        self.store, self.accounts, self.people = store, accounts, people or {}
        self.unattributed: dict[str, int] = {}

    def rows(self, kind: str, name: str, unified: Callable[[dict, dict], str | None],
             pick: Callable[[dict, dict], dict], include_deleted: bool = False) -> list[dict]:
        out, missing = [], 0
        for rec in self.store.iter_records(kind=kind, include_deleted=include_deleted):
            payload = rec["payload"]
            uid = unified(rec, payload)
            if uid is None:
                missing += 1
                continue
            out.append({"unified_id": uid, **pick(rec, payload)})
        if missing:
            self.unattributed[name] = self.unattributed.get(name, 0) + missing
        return out

    def by_account(self, rec: dict, payload: dict) -> str | None:
        ref = _ref(payload, "account_id", "customer_id", "account_ref")
        return self.accounts.get((rec["source"], ref)) if ref else None

    def by_account_or_person(self, rec: dict, payload: dict) -> str | None:
        """Tickets without an organisation (free-mail requesters) go by their requester."""
        uid = self.by_account(rec, payload)
        if uid is None and payload.get("requester_id") is not None:
            uid = self.people.get((rec["source"], str(payload["requester_id"])))
        return uid


def _columns(kind: str) -> Callable[[dict, dict], dict]:
    fields = COLUMNS[kind]
    return lambda rec, payload: {name: payload.get(name) for name in fields}


def load_frames(store: Store, accounts: AccountMap, people: AccountMap | None = None,
                unified: pd.DataFrame | None = None) -> Frames:
    """Every frame the features need. `accounts` and `people` come from `sync.identity.account_map`
    / `people_map`; `unified` (from `sync.identity.unified_accounts`) gives the account list."""
    load = Loader(store, accounts, people)

    account_rows: dict[str, dict[str, Any]] = {}
    for rec in store.iter_records(kind="account"):
        uid = accounts.get((rec["source"], rec["source_id"]))
        if uid is None:
            continue
        p, row = rec["payload"], account_rows.setdefault(uid, {"unified_id": uid})
        # the CRM's view wins for descriptive fields: Salesforce first, then HubSpot, then the rest
        rank = {"salesforce": 0, "hubspot": 1}.get(rec["source"], 2)
        if rank < row.get("_rank", 9):
            row.update(_rank=rank, name=p.get("name"), segment=p.get("segment"), owner_id=p.get("owner_id"),
                       owner_source=rec["source"] if p.get("owner_id") else None)
        row["country"] = row.get("country") or p.get("country")
        created = p.get("created_at")
        if created and (row.get("created_at") is None or str(created) < str(row["created_at"])):
            row["created_at"] = created
    frame = pd.DataFrame(list(account_rows.values()),
                         columns=["unified_id", "name", "country", "segment", "owner_id", "owner_source", "created_at"])
    if unified is not None and len(unified):
        frame = frame.merge(unified[["unified_id", "parent_unified_id"]], on="unified_id", how="left")
    else:
        frame["parent_unified_id"] = None
    accounts_frame = _times(frame)

    subs = load.rows("subscription", "subscriptions", load.by_account,
                     lambda rec, p: {"source_id": rec["source_id"], **_columns("subscriptions")(rec, p)})
    tickets = load.rows("ticket", "tickets", load.by_account_or_person,
                        lambda rec, p: {"source": rec["source"], "source_id": rec["source_id"],
                                        **_columns("tickets")(rec, p)})
    # a Zendesk rating names its ticket: it belongs to the ticket's account
    zendesk_ticket_uid = {t["source_id"]: t["unified_id"] for t in tickets if t["source"] == "zendesk"}
    ratings = load.rows("satisfaction", "ratings",
                        lambda rec, p: zendesk_ticket_uid.get(str(p.get("ticket_id"))),
                        _columns("ratings"))
    activities = load.rows("activity", "activities", load.by_account,
                           lambda rec, p: {"source": rec["source"], "at": p.get("due_date") or rec["updated_at"],
                                           "completed": bool(p.get("completed"))})
    contacts = load.rows("contact", "contacts", load.by_account,
                         lambda rec, p: {"source": rec["source"], "created_at": p.get("created_at"),
                                         "updated_at": rec["updated_at"], "deleted": bool(rec["deleted"])},
                         include_deleted=True)
    usage = load.rows("usage", "usage", load.by_account,
                      lambda rec, p: {"source": rec["source"], "day": p.get("day"), "metric": p.get("metric"),
                                      "value": p.get("value")})
    return Frames(
        accounts=accounts_frame,
        subscriptions=_frame(subs, ["unified_id", "source_id", *COLUMNS["subscriptions"]]),
        invoices=_frame(load.rows("invoice", "invoices", load.by_account, _columns("invoices")),
                        ["unified_id", *COLUMNS["invoices"]]),
        tickets=_frame(tickets, ["unified_id", "source", "source_id", *COLUMNS["tickets"]]),
        ratings=_frame(ratings, ["unified_id", *COLUMNS["ratings"]]),
        renewals=_frame(load.rows("renewal", "renewals", load.by_account,
                                  lambda rec, p: {"source": rec["source"], **_columns("renewals")(rec, p)}),
                        ["unified_id", "source", *COLUMNS["renewals"]]),
        activities=_frame(activities, ["unified_id", "source", "at", "completed"]),
        contacts=_frame(contacts, ["unified_id", "source", "created_at", "updated_at", "deleted"]),
        usage=_frame(usage, ["unified_id", "source", "day", "metric", "value"]),
        unattributed=load.unattributed)

