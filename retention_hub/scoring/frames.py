"""The store's canonical records as typed pandas frames, each row attributed to a unified account.

This is the scoring stage's input (see DESIGN.md, "each stage's input and output is a table"). Every
frame carries `unified_id`; rows whose account reference is unknown to identity are dropped and
counted in `Frames.unattributed`. Times are UTC pandas timestamps, amounts integers in minor units.

Schemas (columns beyond `unified_id`):
- accounts: name, country, segment, parent_unified_id, owner_id (a CRM owner: the CSM), created_at,
  crm_status ("customer" | "former" | None, from the CRM's account type or lifecycle stage) and
  crm_status_at (when that record last changed: for a former customer, about when it left)
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
- usage: source (Categorical), day (UTC midnight, datetime64[ns, UTC]), active_users, sessions, events,
  features_used, api_calls (float32; NaN where the source has no such metric): one row per source account
  and day, from `Store.usage_frame`; unified_id is a Categorical here
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..sync.store import USAGE_COLUMNS, Store

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
TIMES = {"crm_status_at", "start", "canceled_at", "ended_at", "cancel_at", "created_at", "paid_at", "solved_at", "close_date",
         "at", "updated_at", "day"}


def _ref(payload: dict, *keys: str) -> str | None:
    for key in keys:
        value = payload.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _crm_status(source: str, payload: dict) -> str | None:
    """"customer" or "former" from the CRM's account type (Salesforce) or lifecycle stage (HubSpot)."""
    if source == "salesforce":
        kind = str(payload.get("type") or "").lower()
        return "former" if "former" in kind else "customer" if kind == "customer" else None
    if source == "hubspot":
        stage = str(payload.get("lifecycle_stage") or "").lower()
        return "customer" if stage == "customer" else "former" if stage in ("other", "former_customer") else None
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


def usage_frame(store: Store, accounts: AccountMap, since: pd.Timestamp | None = None) -> tuple[pd.DataFrame, int]:
    """Daily usage after `since` (None: all of it) with its unified account, and how many rows had
    none. Accounts are matched per distinct (source, account_ref), never per row: a small lookup
    frame of the categories merged with the account map, then one take over the rows' codes."""
    start = None
    if since is not None:
        since = pd.Timestamp(since)
        start = (since.tz_localize("UTC") if since.tzinfo is None else since.tz_convert("UTC")).date()
    raw = store.usage_frame(start, None)
    sources, refs = raw["source"].cat, raw["account_ref"].cat
    grid = pd.DataFrame({"source": np.repeat(np.asarray(sources.categories, dtype=object), len(refs.categories)),
                         "account_ref": np.tile(np.asarray(refs.categories, dtype=object), len(sources.categories))})
    wanted = set(sources.categories)
    known = pd.DataFrame([(s, ref, uid) for (s, ref), uid in accounts.items() if s in wanted],
                         columns=["source", "account_ref", "unified_id"], dtype=object)
    matched = grid.merge(known, on=["source", "account_ref"], how="left")["unified_id"]
    grid_codes, names = pd.factorize(matched)
    lookup = grid_codes.astype(np.int32)
    codes = lookup[sources.codes.to_numpy().astype(np.int64) * len(refs.categories) + refs.codes.to_numpy()] \
        if len(grid) else np.empty(0, np.int32)
    keep = codes >= 0
    missing = int(len(codes) - keep.sum())
    # in place: the frame is the largest the scoring stage holds, so it is not copied unless rows go
    raw.insert(0, "unified_id", pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=object)))
    del raw["account_ref"]
    if missing:
        raw = raw[keep].reset_index(drop=True)
    return raw, missing


def load_frames(store: Store, accounts: AccountMap, people: AccountMap | None = None,
                unified: pd.DataFrame | None = None, usage_since: pd.Timestamp | None = None) -> Frames:
    """Every frame the features need. `accounts` and `people` come from `sync.identity.account_map`
    / `people_map`; `unified` (from `sync.identity.unified_accounts`) gives the account list.
    `usage_since` bounds the usage read to the days after it (None: all history); the features look
    back 180 days from the date they are built for."""
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
        status = _crm_status(rec["source"], p)
        if status and rank < row.get("_status_rank", 9):  # Salesforce's word first, then HubSpot's
            row.update(_status_rank=rank, crm_status=status, crm_status_at=rec["updated_at"])
        created = p.get("created_at")
        if created and (row.get("created_at") is None or str(created) < str(row["created_at"])):
            row["created_at"] = created
    frame = pd.DataFrame(list(account_rows.values()),
                         columns=["unified_id", "name", "country", "segment", "owner_id", "owner_source", "created_at",
                                  "crm_status", "crm_status_at"])
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
    usage, no_account = usage_frame(store, accounts, usage_since)
    if no_account:
        load.unattributed["usage"] = load.unattributed.get("usage", 0) + no_account
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
        usage=usage,
        unattributed=load.unattributed)

