"""Point-in-time features per unified account as of a date, from the frames of `scoring/frames.py`.

Only what was visible at `as_of` is used: rows created after it are ignored, and states that change
over time (a ticket open, an invoice unpaid) are judged by their timestamps at `as_of`, not by the
record's latest state. Missing data stays NaN (a `has_*` flag says which sources an account has);
nothing is invented. Pure DataFrame functions: no store, no HTTP.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import pandas as pd

from ..config.models import TicketTopic
from .frames import Frames

DAY = pd.Timedelta(days=1)
HIGH = ("high", "urgent")
USAGE_METRICS = ("active_users", "sessions", "events", "features_used", "api_calls")
# words a CSM reads, for explanations and model drivers (feature -> label)
LABELS: dict[str, str] = {
    "active_users_30d": "daily active users (30-day average)",
    "active_users_trend_30d": "change in active users, last 30 days vs the 30 before",
    "active_users_trend_60d": "change in active users, last 60 days vs the 60 before",
    "active_users_trend_90d": "change in active users, last 90 days vs the 90 before",
    "seat_utilization": "active users per paid seat",
    "active_users_7d": "daily active users (last 7 days)",
    "seat_utilization_7d": "active users per paid seat (last 7 days)",
    "active_users_180d": "daily active users (180-day average)",
    "seat_utilization_180d": "active users per paid seat (180-day average)",
    "feature_breadth_7d": "features used per day (last 7 days)",
    "api_calls_30d": "API calls per day (30-day average)",
    "feature_breadth_30d": "features used per day (30-day average)",
    "sessions_per_user_30d": "sessions per active user (30 days)",
    "days_since_usage": "days since anyone used the product",
    "api_calls_trend_30d": "change in API calls, last 30 days vs the 30 before",
    "tickets_90d": "support tickets in the last 90 days",
    "high_priority_tickets_90d": "high-priority tickets in the last 90 days",
    "escalations_90d": "escalated tickets in the last 90 days",
    "open_tickets": "tickets open now",
    "resolution_hours_90d": "median hours to resolve a ticket (90 days)",
    "csat_90d": "share of good satisfaction ratings (90 days)",
    "bad_ratings_90d": "bad satisfaction ratings in the last 90 days",
    "pricing_tickets_90d": "tickets about price or discounts in the last 90 days",
    "export_tickets_90d": "tickets about exporting data or migrating away in the last 90 days",
    "mrr": "monthly recurring revenue",
    "mrr_change_90d": "change in MRR over 90 days",
    "seats": "paid seats",
    "failed_payments_90d": "failed payments in the last 90 days",
    "in_dunning": "an unpaid invoice being retried",
    "days_to_renewal": "days to the next renewal",
    "annual_plan": "on an annual contract",
    "tenure_days": "days as a customer",
    "days_since_last_activity": "days since the CSM's last activity",
    "contacts_lost_90d": "contacts who left in the last 90 days",
    "contacts_lost_365d": "contacts who left in the last year",
    "has_usage": "product usage data available",
    "has_tickets": "has ever filed a support ticket",
    "health_score": "health score",
}


def _window(frame: pd.DataFrame, column: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Rows with start < frame[column] <= end."""
    when = frame[column]
    return frame[(when > start) & (when <= end)]


def active_accounts(frames: Frames, as_of: pd.Timestamp) -> pd.Index:
    """Unified ids with a subscription that had started and not ended at `as_of`; accounts billed
    outside the billing system (no subscription at all) count while the CRM calls them a customer:
    created by then, and a customer still or marked former only after `as_of`."""
    subs = frames.subscriptions
    ended = subs["ended_at"].fillna(subs["canceled_at"])
    live = subs[(subs["start"] <= as_of) & (ended.isna() | (ended > as_of))]
    return pd.Index(live["unified_id"].unique(), name="unified_id").append(_crm_only(frames, as_of)).unique()


def _crm_only(frames: Frames, as_of: pd.Timestamp) -> pd.Index:
    a = frames.accounts
    if "crm_status" not in a:
        return pd.Index([], name="unified_id")
    unbilled = a[~a["unified_id"].isin(frames.subscriptions["unified_id"]) & a["crm_status"].notna()
                 & (a["created_at"] <= as_of)]
    current = (unbilled["crm_status"] == "customer") | (unbilled["crm_status_at"] > as_of)
    return pd.Index(unbilled.loc[current, "unified_id"], name="unified_id")


def usage_features(usage: pd.DataFrame, as_of: pd.Timestamp, ids: pd.Index) -> pd.DataFrame:
    """Level, 30/60/90-day trends, breadth and recency from the daily usage frame (`Frames.usage`: one
    row per source account and day, a column per metric, NaN where a source has no such metric).

    Only rows of the 180 complete days before `as_of`'s day count. An account has a metric's figure for a window when
    it has a row with that metric in the window; rows of one account and day (two sources) add up.
    The frame can hold 100,000 accounts x 180 days: per-row work is vectorised, and what is kept per
    account is a sum per span of days ago (every window below is a union of spans), not per day.
    """
    USAGE_SPANS = (0, 7, 30, 60, 90, 120, 180)  # noqa: N806 (the spans of days ago the windows are made of)
    out = pd.DataFrame(index=ids)
    if usage.empty:
        return out
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    # age 0 is the last complete day before as_of: as_of's own day is still being used (a sync reads
    # only complete days), so counting it would make "now" look emptier than any past snapshot
    today = (as_of - pd.Timestamp(0, tz="UTC")) // DAY - 1
    stamps = usage["day"].array
    per_day = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}[stamps.unit]
    age = today - stamps.asi8 // per_day  # 0 = as_of's own day
    uid = usage["unified_id"]
    uid = uid if isinstance(uid.dtype, pd.CategoricalDtype) else uid.astype("category")
    names, codes = uid.cat.categories, uid.cat.codes.to_numpy()
    inside = (age >= 0) & (age < USAGE_SPANS[-1]) & (codes >= 0)
    if not inside.any():
        return out
    everything = bool(inside.all())  # the usual case: no row-sized copies of the metric columns
    age = (age if everything else age[inside]).astype(np.int16)
    codes = (codes if everything else codes[inside]).astype(np.int32)
    n_spans, accounts = len(USAGE_SPANS) - 1, len(names)
    span_of_age = np.repeat(np.arange(n_spans, dtype=np.int32), np.diff(USAGE_SPANS))
    cell = codes * n_spans + span_of_age[age]  # each row's (account, span) cell
    block = 2_000_000  # rows per bincount: its int64/float64 copies of the inputs stay small

    def grid(metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(sums, has a row) per account and span, and which rows have the metric; None without any."""
        if metric not in usage:
            return None
        values = usage[metric].to_numpy() if everything else usage[metric].to_numpy()[inside]
        valid = ~np.isnan(values)
        if not valid.any():
            return None
        sums = np.zeros(accounts * n_spans)
        seen = np.zeros(accounts * n_spans, bool)
        for start in range(0, len(values), block):
            part, ok = slice(start, start + block), valid[start:start + block]
            sums += np.bincount(cell[part][ok], weights=values[part][ok], minlength=accounts * n_spans)
            seen[cell[part][ok]] = True
        return sums.reshape(accounts, n_spans), seen.reshape(accounts, n_spans), valid

    def series(values: np.ndarray) -> pd.Series:
        return pd.Series(values, index=names).reindex(ids)

    def window(sums: np.ndarray, seen: np.ndarray, first: int, last: int, n: int) -> np.ndarray:
        """Per account: the sum over days ago [first, last) / n; NaN without a row there."""
        spans = slice(USAGE_SPANS.index(first), USAGE_SPANS.index(last))
        return np.where(seen[:, spans].any(axis=1), sums[:, spans].sum(axis=1) / n, np.nan)

    def trend(sums: np.ndarray, seen: np.ndarray, n: int) -> np.ndarray:
        """The last n days vs the n before (as `_ratio`: NaN when there is nothing before)."""
        now = sums[:, :USAGE_SPANS.index(n)].sum(axis=1) / n
        before = window(sums, seen, n, 2 * n, n)
        before = np.where(before == 0, np.nan, before)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.clip(now / before - 1, -1, 10)

    users = grid("active_users")
    if users is not None:
        sums, seen, valid = users
        out["active_users_30d"] = series(window(sums, seen, 0, 30, 30))
        # the last week: the freshest read of how much the team uses the product (a whole week, so
        # weekends weigh the same in every account)
        out["active_users_7d"] = series(window(sums, seen, 0, 7, 7))
        # the long-run level: where an account's usage returns to after a bad or a good month
        out["active_users_180d"] = series(window(sums, seen, 0, 180, 180))
        for n in (30, 60, 90):
            out[f"active_users_trend_{n}d"] = series(trend(sums, seen, n))
        # days since usage: the fewest days ago with active users > 0, per account (180: none in the window)
        values = usage["active_users"].to_numpy() if everything else usage["active_users"].to_numpy()[inside]
        used = valid & (values > 0)
        above = np.zeros((accounts, USAGE_SPANS[-1]), bool)
        above.flat[codes[used] * USAGE_SPANS[-1] + age[used]] = True
        last_used = np.where(above.any(axis=1), above.argmax(axis=1), 180.0)
        out["days_since_usage"] = series(np.where(seen.any(axis=1), last_used, np.nan))
        del users, sums, seen, valid, values, used, above
    calls = grid("api_calls")
    if calls is not None:
        out["api_calls_trend_30d"] = series(trend(calls[0], calls[1], 30))
        out["api_calls_30d"] = series(window(calls[0], calls[1], 0, 30, 30))
        del calls
    for metric, name in (("features_used", "feature_breadth"), ("sessions", "_sessions")):
        found = grid(metric)
        if found is not None and found[1][:, :2].any():
            out[f"{name}_30d"] = series(window(found[0], found[1], 0, 30, 30))
            out[f"{name}_7d"] = series(window(found[0], found[1], 0, 7, 7))
    out = out.drop(columns=["_sessions_7d"], errors="ignore")
    sessions = out.pop("_sessions_30d") if "_sessions_30d" in out else None
    if sessions is not None and "active_users_30d" in out:
        out["sessions_per_user_30d"] = sessions / out["active_users_30d"].replace(0, np.nan)
    return out


def _ratio(now: pd.Series, before: pd.Series) -> pd.Series:
    """Relative change now vs before (NaN when there is nothing to compare with)."""
    before = before.reindex(now.index.union(before.index))
    now = now.reindex(before.index).fillna(0.0)
    return (now / before.replace(0, np.nan) - 1).clip(-1, 10)


def mark_topics(tickets: pd.DataFrame, topics: Mapping[str, TicketTopic]) -> pd.DataFrame:
    """Add a boolean column `topic_<name>` per topic: a ticket carries one of its tags, or its subject
    contains one of its words. Done once per frame (not per snapshot): it is string work."""
    tags = tickets["tags"] if "tags" in tickets else pd.Series([[]] * len(tickets), index=tickets.index)
    subjects = tickets["subject"].fillna("").astype(str).str.lower() if "subject" in tickets \
        else pd.Series("", index=tickets.index)
    for name, topic in topics.items():
        wanted = {t.lower() for t in topic.tags}
        hit = tags.map(lambda ts: bool(wanted.intersection(str(t).lower() for t in ts)) if isinstance(ts, list)
                       else False).astype(bool)
        if topic.words:
            hit |= subjects.str.contains("|".join(re.escape(w.lower()) for w in topic.words), regex=True)
        tickets[f"topic_{name}"] = hit.to_numpy()
    return tickets


def ticket_features(frames: Frames, as_of: pd.Timestamp, ids: pd.Index) -> pd.DataFrame:
    out = pd.DataFrame(index=ids)
    t = frames.tickets
    seen = t[t["created_at"] <= as_of]
    last90 = seen[seen["created_at"] > as_of - 90 * DAY]
    group = last90.groupby("unified_id")
    out["tickets_90d"] = group.size().reindex(ids).fillna(0)
    out["high_priority_tickets_90d"] = last90[last90["priority"].isin(HIGH)].groupby("unified_id").size() \
        .reindex(ids).fillna(0)
    out["escalations_90d"] = last90[last90["escalated"].fillna(False).astype(bool)].groupby("unified_id").size() \
        .reindex(ids).fillna(0)
    open_now = seen[seen["solved_at"].isna() | (seen["solved_at"] > as_of)]
    out["open_tickets"] = open_now.groupby("unified_id").size().reindex(ids).fillna(0)
    solved = _window(seen, "solved_at", as_of - 90 * DAY, as_of)
    hours = (solved["solved_at"] - solved["created_at"]) / pd.Timedelta(hours=1)
    out["resolution_hours_90d"] = hours.groupby(solved["unified_id"]).median().reindex(ids)
    for column in [c for c in t if c.startswith("topic_")]:
        out[f"{column[6:]}_tickets_90d"] = last90[last90[column]].groupby("unified_id").size().reindex(ids).fillna(0)
    r = _window(frames.ratings, "created_at", as_of - 90 * DAY, as_of)
    good = (r["score"] == "good").groupby(r["unified_id"])
    out["csat_90d"] = good.mean().reindex(ids)
    out["bad_ratings_90d"] = (~(r["score"] == "good")).groupby(r["unified_id"]).sum().reindex(ids).fillna(0)
    return out


def billing_features(frames: Frames, as_of: pd.Timestamp, ids: pd.Index) -> pd.DataFrame:
    """MRR from the invoices issued by then (the subscription record holds only today's state)."""
    out = pd.DataFrame(index=ids)
    subs = frames.subscriptions[frames.subscriptions["start"] <= as_of].sort_values("start")
    latest = subs.groupby("unified_id").last()
    months = latest["interval"].map({"year": 12.0, "month": 1.0}).fillna(1.0)
    inv = frames.invoices[frames.invoices["created_at"] <= as_of]
    cycle = inv[inv["billing_reason"].isin(["subscription_cycle", "subscription_create"]) | inv["billing_reason"].isna()]
    cycle = cycle.sort_values("created_at")
    last = cycle.groupby("unified_id")["amount_minor"].last()
    out["mrr"] = (last / months.reindex(last.index).fillna(1.0)).reindex(ids) / 100
    before = cycle[cycle["created_at"] <= as_of - 90 * DAY].groupby("unified_id")["amount_minor"].last()
    out["mrr_change_90d"] = _ratio(last, before).reindex(ids).where(before.reindex(ids).notna())
    out["seats"] = latest["quantity"].reindex(ids).astype(float)
    # customers decide at renewal points: an annual contract can churn only near its anniversary
    out["annual_plan"] = (latest["interval"] == "year").astype(float).reindex(ids)
    recent = inv[inv["created_at"] > as_of - 90 * DAY]
    late = recent["attempted"].fillna(False).astype(bool) & (
        recent["paid_at"].isna() | (recent["paid_at"] > recent["created_at"] + DAY))
    out["failed_payments_90d"] = late.groupby(recent["unified_id"]).sum().reindex(ids).fillna(0)
    unpaid = inv["attempted"].fillna(False).astype(bool) & (inv["paid_at"].isna() | (inv["paid_at"] > as_of)) \
        & ~inv["status"].isin(["void", "draft"])
    out["in_dunning"] = unpaid.groupby(inv["unified_id"]).any().reindex(ids).fillna(False).astype(float)
    out["tenure_days"] = ((as_of - subs.groupby("unified_id")["start"].min()) / DAY).reindex(ids)
    ren = frames.renewals
    ahead = ren[(ren["close_date"] > as_of) & (ren["type"].fillna("").str.lower().str.contains("renew|existing"))]
    nxt = ahead.groupby("unified_id")["close_date"].min()
    anniversary = _next_anniversary(latest, as_of)
    out["days_to_renewal"] = ((nxt.reindex(ids).fillna(anniversary.reindex(ids)) - as_of) / DAY)
    return out


def _next_anniversary(latest: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """Without a renewal record: the next anniversary of the start (monthly plans: of the month)."""
    period = latest["interval"].map({"year": 365.25, "month": 365.25 / 12}).fillna(365.25 / 12)
    elapsed = ((as_of - latest["start"]) / DAY).clip(lower=0)
    periods = np.floor(elapsed / period) + 1
    return latest["start"] + pd.to_timedelta(periods * period, unit="D")


def engagement_features(frames: Frames, as_of: pd.Timestamp, ids: pd.Index) -> pd.DataFrame:
    out = pd.DataFrame(index=ids)
    act = frames.activities[frames.activities["at"] <= as_of]
    out["days_since_last_activity"] = ((as_of - act.groupby("unified_id")["at"].max()) / DAY).reindex(ids)
    c = frames.contacts
    lost = c[c["deleted"] & (c["updated_at"] > as_of - 90 * DAY) & (c["updated_at"] <= as_of)]
    out["contacts_lost_90d"] = lost.groupby("unified_id").size().reindex(ids).fillna(0)
    lost = c[c["deleted"] & (c["updated_at"] > as_of - 365 * DAY) & (c["updated_at"] <= as_of)]
    out["contacts_lost_365d"] = lost.groupby("unified_id").size().reindex(ids).fillna(0)
    return out


def build_features(frames: Frames, as_of: pd.Timestamp | str, ids: pd.Index | None = None,
                   topics: Mapping[str, TicketTopic] | None = None) -> pd.DataFrame:
    """One row per unified account (default: those active at `as_of`), indexed by unified_id.
    `topics` (config `scoring.ticket_topics`) adds `<topic>_tickets_90d` counts."""
    if topics and not all(f"topic_{name}" in frames.tickets for name in topics):
        mark_topics(frames.tickets, topics)
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    ids = active_accounts(frames, as_of) if ids is None else pd.Index(ids, name="unified_id")
    parts = [usage_features(frames.usage, as_of, ids), ticket_features(frames, as_of, ids),
             billing_features(frames, as_of, ids), engagement_features(frames, as_of, ids)]
    out = pd.concat(parts, axis=1)
    if "active_users_30d" in out and "seats" in out:
        out["seat_utilization"] = out["active_users_30d"] / out["seats"].replace(0, np.nan)
        if "active_users_7d" in out:
            out["seat_utilization_7d"] = out["active_users_7d"] / out["seats"].replace(0, np.nan)
        if "active_users_180d" in out:
            out["seat_utilization_180d"] = out["active_users_180d"] / out["seats"].replace(0, np.nan)
    out["has_usage"] = out.get("active_users_30d", pd.Series(index=ids, dtype=float)).notna().astype(float)
    out["has_tickets"] = ids.isin(frames.tickets["unified_id"]).astype(float)
    out.index.name = "unified_id"
    return out


def churn_labels(frames: Frames, as_of: pd.Timestamp, ids: pd.Index, horizon_days: int = 90) -> pd.Series:
    """1 when the account's last live subscription ends within the horizon after `as_of`."""
    subs = frames.subscriptions
    ended = subs["ended_at"].fillna(subs["canceled_at"])
    # an account churns when it has no subscription running at as_of + horizon (without any
    # subscription: when the CRM no longer calls it a customer then)
    end = as_of + horizon_days * DAY
    running = subs[(subs["start"] <= end) & (ended.isna() | (ended > end))]["unified_id"].unique()
    running = pd.Index(running).append(_crm_only(frames, end))
    return pd.Series((~ids.isin(running)).astype(int), index=ids, name="churned")
