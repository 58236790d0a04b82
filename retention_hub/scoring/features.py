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
    "has_usage": "product usage data available",
    "has_tickets": "has ever filed a support ticket",
    "health_score": "health score",
}


def _window(frame: pd.DataFrame, column: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Rows with start < frame[column] <= end."""
    when = frame[column]
    return frame[(when > start) & (when <= end)]


def active_accounts(frames: Frames, as_of: pd.Timestamp) -> pd.Index:
    """Unified ids with a subscription that had started and not ended at `as_of`."""
    subs = frames.subscriptions
    ended = subs["ended_at"].fillna(subs["canceled_at"])
    live = subs[(subs["start"] <= as_of) & (ended.isna() | (ended > as_of))]
    return pd.Index(live["unified_id"].unique(), name="unified_id")


def usage_features(usage: pd.DataFrame, as_of: pd.Timestamp, ids: pd.Index) -> pd.DataFrame:
    """Level, 30/60/90-day trends, breadth and recency from daily usage rows."""
    out = pd.DataFrame(index=ids)
    recent = usage[(usage["day"] > as_of - 180 * DAY) & (usage["day"] <= as_of)]
    if recent.empty:
        return out
    age = ((as_of - recent["day"]) / DAY).astype(int)  # 0 = the last day
    wide = recent.assign(age=age.values)
    for metric in ("active_users", "api_calls"):
        rows = wide[wide["metric"] == metric]
        if rows.empty:
            continue
        by = rows.groupby("unified_id")
        sums = {n: rows[rows["age"] < n].groupby("unified_id")["value"].sum() / n for n in (30, 60, 90)}
        prev = {n: rows[(rows["age"] >= n) & (rows["age"] < 2 * n)].groupby("unified_id")["value"].sum() / n
                for n in (30, 60, 90)}
        if metric == "active_users":
            out["active_users_30d"] = sums[30].reindex(ids)
            for n in (30, 60, 90):
                out[f"active_users_trend_{n}d"] = _ratio(sums[n], prev[n]).reindex(ids)
            used = rows[rows["value"] > 0].groupby("unified_id")["age"].min()
            out["days_since_usage"] = used.reindex(ids).fillna(180.0).where(by.size().reindex(ids).notna())
        else:
            out["api_calls_trend_30d"] = _ratio(sums[30], prev[30]).reindex(ids)
    for metric, name in (("features_used", "feature_breadth_30d"), ("sessions", "_sessions_30d")):
        rows = wide[(wide["metric"] == metric) & (wide["age"] < 30)]
        if not rows.empty:
            out[name] = (rows.groupby("unified_id")["value"].sum() / 30).reindex(ids)
    if "_sessions_30d" in out and "active_users_30d" in out:
        out["sessions_per_user_30d"] = out.pop("_sessions_30d") / out["active_users_30d"].replace(0, np.nan)
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
    out["has_usage"] = out.get("active_users_30d", pd.Series(index=ids, dtype=float)).notna().astype(float)
    out["has_tickets"] = ids.isin(frames.tickets["unified_id"]).astype(float)
    out.index.name = "unified_id"
    return out


def churn_labels(frames: Frames, as_of: pd.Timestamp, ids: pd.Index, horizon_days: int = 90) -> pd.Series:
    """1 when the account's last live subscription ends within the horizon after `as_of`."""
    subs = frames.subscriptions
    ended = subs["ended_at"].fillna(subs["canceled_at"])
    # an account churns when it has no subscription running at as_of + horizon
    end = as_of + horizon_days * DAY
    running = subs[(subs["start"] <= end) & (ended.isna() | (ended > end))]["unified_id"].unique()
    return pd.Series((~ids.isin(running)).astype(int), index=ids, name="churned")
