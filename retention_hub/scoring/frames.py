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


# Each kind's fields, extracted from the payloads once and kept up to date by the store
# (`Store.record_frame`); attribution to unified accounts happens afterwards, on whole columns, since
# identity changes independently of the records. Change EXTRACTION with any extractor: the store then
# rebuilds its tables.
EXTRACTION = "frames-2"
REFS = ("account_id", "customer_id", "account_ref")


def _extractor(*fields: str, **refs: tuple[str, ...]) -> Callable[[dict], dict]:
    """payload -> `fields` as they are, plus each ref (the first non-empty of its keys, as text)."""
    def extract(payload: dict) -> dict:
        out = {name: payload.get(name) for name in fields}
        for name, keys in refs.items():
            out[name] = _ref(payload, *keys)
        return out
    return extract


EXTRACTORS: dict[str, tuple[list[str], Callable[[dict], dict]]] = {
    kind: ([*refs, *fields], _extractor(*fields, **refs)) for kind, fields, refs in (
        ("account", ("name", "segment", "owner_id", "country", "created_at", "type", "lifecycle_stage"), {}),
        ("subscription", COLUMNS["subscriptions"], {"account_ref": REFS}),
        ("invoice", COLUMNS["invoices"], {"account_ref": REFS}),
        ("ticket", COLUMNS["tickets"], {"account_ref": REFS, "requester_ref": ("requester_id",)}),
        ("satisfaction", COLUMNS["ratings"], {"ticket_ref": ("ticket_id",)}),
        ("renewal", COLUMNS["renewals"], {"account_ref": REFS}),
        ("activity", ("due_date", "completed"), {"account_ref": REFS}),
        ("contact", ("created_at",), {"account_ref": REFS}),
    )}


def _map_frame(mapping: AccountMap | pd.DataFrame) -> pd.DataFrame:
    """An account or people map as a frame: source, ref, unified_id (a frame is taken as it is)."""
    if isinstance(mapping, pd.DataFrame):
        return mapping
    return pd.DataFrame([(s, ref, uid) for (s, ref), uid in mapping.items()], columns=["source", "ref", "unified_id"])


def _attribute(frame: pd.DataFrame, column: str, mapping: pd.DataFrame) -> pd.Series:
    """unified_id of each row by (source, frame[column]) (NaN where unknown), in the frame's order."""
    keys = frame[["source", column]].rename(columns={column: "ref"})
    return keys.merge(mapping, on=["source", "ref"], how="left")["unified_id"].set_axis(frame.index)


def _truthy(values: pd.Series) -> pd.Series:
    return values.notna() & (values.astype(object) != "") & (values.astype(object) != False)  # noqa: E712


def _first(frame: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Each unified account's first row (lowest `by`, then in the table's order), by unified_id."""
    if by is not None:
        frame = frame.sort_values(by, kind="stable")
    return frame.drop_duplicates("unified_id").set_index("unified_id")


def _accounts(table: pd.DataFrame, unified: pd.DataFrame | None) -> pd.DataFrame:
    """One row per unified account from its account records: the CRM's view wins for descriptive
    fields (Salesforce first, then HubSpot, then the rest), the first country found, the CRM status
    by the same ranking (with its record's last change), and the earliest creation time."""
    a = table[table["unified_id"].notna()].copy()
    a["rank"] = a["source"].map({"salesforce": 0, "hubspot": 1}).fillna(2)
    # ties (and the accounts' order) go by (source, source_id), whatever order the table came in
    a = a.sort_values(["source", "source_id"], ignore_index=True)
    a["crm_status"] = [_crm_status(s, {"type": t, "lifecycle_stage": st})
                       for s, t, st in zip(a["source"], a["type"], a["lifecycle_stage"])]
    frame = pd.DataFrame(index=pd.Index(pd.unique(a["unified_id"]), name="unified_id"))
    best = _first(a, "rank")
    frame["name"], frame["segment"], frame["owner_id"] = best["name"], best["segment"], best["owner_id"]
    frame["owner_source"] = best["source"].where(_truthy(best["owner_id"]), None)
    frame["country"] = _first(a[_truthy(a["country"])])["country"]
    status = _first(a[a["crm_status"].notna()], "rank")
    frame["created_at"] = _first(a[a["created_at"].notna()], "created_at")["created_at"]
    frame["crm_status"], frame["crm_status_at"] = status["crm_status"], status["updated_at"]
    frame = frame.reset_index()
    frame = frame[["unified_id", "name", "country", "segment", "owner_id", "owner_source", "created_at",
                   "crm_status", "crm_status_at"]]
    if unified is not None and len(unified):
        frame = frame.merge(unified[["unified_id", "parent_unified_id"]], on="unified_id", how="left")
    else:
        frame["parent_unified_id"] = None
    return _times(frame)


def load_frames(store: Store, accounts: AccountMap | pd.DataFrame, people: AccountMap | pd.DataFrame | None = None,
                unified: pd.DataFrame | None = None, usage_since: pd.Timestamp | None = None) -> Frames:
    """Every frame the features need. `accounts` and `people` come from `sync.identity.account_map`
    / `people_map` (or their frames: `map_frame`); `unified` (from `sync.identity.unified_accounts`) gives the account list.
    `usage_since` bounds the usage read to the days after it (None: all history); the features look
    back 180 days from the date they are built for."""
    account_map, people_map = _map_frame(accounts), _map_frame({} if people is None else people)
    unattributed: dict[str, int] = {}

    def table(kind: str, include_deleted: bool = False) -> pd.DataFrame:
        columns, extract = EXTRACTORS[kind]
        return store.record_frame(kind, columns, extract, EXTRACTION, include_deleted=include_deleted, finish=_times)

    def attributed(kind: str, name: str, include_deleted: bool = False) -> pd.DataFrame:
        t = table(kind, include_deleted)
        t.insert(0, "unified_id", _attribute(t, "account_ref", account_map))
        if kind == "ticket":  # tickets without an organisation (free-mail requesters) go by their requester
            t["unified_id"] = t["unified_id"].fillna(_attribute(t, "requester_ref", people_map))
        return _kept(t, name)

    def _kept(t: pd.DataFrame, name: str) -> pd.DataFrame:
        missing = int(t["unified_id"].isna().sum())
        if missing:
            unattributed[name] = unattributed.get(name, 0) + missing
        return t[t["unified_id"].notna()].reset_index(drop=True)

    records = table("account")
    records["unified_id"] = _attribute(records.assign(ref=records["source_id"]), "ref", account_map)
    accounts_frame = _accounts(records, unified)
    del records

    tickets = attributed("ticket", "tickets")
    # a Zendesk rating names its ticket: it belongs to the ticket's account
    ratings = table("satisfaction")
    zendesk = tickets[tickets["source"] == "zendesk"].drop_duplicates("source_id")
    ratings.insert(0, "unified_id", ratings["ticket_ref"].map(zendesk.set_index("source_id")["unified_id"]))
    ratings = _kept(ratings, "ratings")
    activities = attributed("activity", "activities")
    activities["at"] = activities["due_date"].where(_truthy(activities["due_date"]), activities["updated_at"])
    activities["completed"] = activities["completed"].astype(bool)
    contacts = attributed("contact", "contacts", include_deleted=True)
    usage, no_account = usage_frame(store, account_map, usage_since)
    if no_account:
        unattributed["usage"] = unattributed.get("usage", 0) + no_account

    def typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        return _times(frame[columns].copy())

    return Frames(
        accounts=accounts_frame,
        subscriptions=typed(attributed("subscription", "subscriptions"),
                            ["unified_id", "source_id", *COLUMNS["subscriptions"]]),
        invoices=typed(attributed("invoice", "invoices"), ["unified_id", *COLUMNS["invoices"]]),
        tickets=typed(tickets, ["unified_id", "source", "source_id", *COLUMNS["tickets"]]),
        ratings=typed(ratings, ["unified_id", *COLUMNS["ratings"]]),
        renewals=typed(attributed("renewal", "renewals"), ["unified_id", "source", *COLUMNS["renewals"]]),
        activities=typed(activities, ["unified_id", "source", "at", "completed"]),
        contacts=typed(contacts, ["unified_id", "source", "created_at", "updated_at", "deleted"]),
        usage=usage,
        unattributed=unattributed)


def usage_frame(store: Store, accounts: AccountMap | pd.DataFrame,
                since: pd.Timestamp | None = None) -> tuple[pd.DataFrame, int]:
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
    known = _map_frame(accounts)
    known = known[known["source"].isin(wanted)].rename(columns={"ref": "account_ref"}).astype(object)
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
