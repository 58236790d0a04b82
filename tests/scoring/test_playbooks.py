"""Playbook selection: triggers, stable task keys and episodes, holdout, alert budget, templates."""
from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from retention_hub.config.defaults import DEFAULT_PLAYBOOKS
from retention_hub.config.models import Playbook, Step
from retention_hub.scoring.playbooks import holdout_draw, matches, render, select

NOW = pd.Timestamp("2026-11-01T06:00:00Z")


def scores(n: int = 4, **columns) -> pd.DataFrame:
    base = {"name": [f"Acme {i}" for i in range(n)], "tier": ["red"] * n, "previous_tier": ["yellow"] * n,
            "health_score": [30.0] * n, "previous_score": [50.0] * n, "churn_probability": [0.5] * n,
            "churn_reason": ["price"] * n, "reason_evidence": ["1 ticket(s) about price"] * n, "drivers": [""] * n,
            "days_to_renewal": [100.0] * n, "renewal_date": ["2027-02-09"] * n, "arr": [12_000.0] * n,
            "owner_id": ["csm1"] * n, "segment": ["SMB"] * n, "lifecycle_stage": ["at_risk"] * n}
    base.update(columns)
    return pd.DataFrame(base, index=[f"u{i}" for i in range(n)])


def book(**kw) -> Playbook:
    spec = {"name": "rescue", "holdout_share": 0.0, "when": {"tier": ["red"]},
            "steps": [{"key": "call", "subject": "Call {name} ({tier}, {churn_probability:.0%})", "due_in_hours": 24}]}
    spec.update(kw)
    return Playbook.model_validate(spec)


def test_conditions() -> None:
    s = scores(3, tier=["red", "yellow", "green"], health_score=[20.0, 50.0, 90.0], previous_score=[45.0, 52.0, 80.0],
               previous_tier=["yellow", "yellow", "yellow"], days_to_renewal=[10.0, None, 200.0])
    check = lambda **when: matches(Playbook.model_validate({"name": "x", "when": when, "steps": [
        {"key": "k", "subject": "s"}]}).when, s).tolist()
    assert check(tier=["red", "yellow"]) == [True, True, False]
    assert check(score_drop_gte=20) == [True, False, False]
    assert check(tier_change="down") == [True, False, False]
    assert check(tier_change="up") == [False, False, True]
    assert check(days_to_renewal_lte=30) == [True, False, False]  # no renewal date: not within 30 days
    assert check(churn_probability_gte=0.5, reason=["price"]) == [True, True, True]
    assert check() == [True, True, True]


def test_tasks_have_stable_keys_templates_and_due_dates() -> None:
    _, tasks, episodes = select(scores(1), [book()], NOW, tasks_per_week=10)
    t = tasks.iloc[0]
    assert t["task_key"] == "u0:rescue:call:2026-11-01"
    assert t["subject"] == "Call Acme 0 (red, 50%)"
    assert t["due_at"] == NOW + pd.Timedelta(hours=24) and t["status"] == "new" and t["arr_at_risk"] == 6000.0
    # a week later the trigger still holds: the same episode, so the same key, already created: no new task
    later = NOW + pd.Timedelta(days=7)
    _, again, episodes2 = select(scores(1), [book()], later, 10, episodes, tasks)
    assert again.empty and episodes2.iloc[0]["episode_start"] == episodes.iloc[0]["episode_start"]
    # the trigger cleared, then fires again: a new episode and a new key
    _, none, cleared = select(scores(1, tier=["green"]), [book()], later, 10, episodes2, tasks)
    assert none.empty and cleared.empty
    _, fresh, _ = select(scores(1), [book()], later + pd.Timedelta(days=1), 10, cleared, tasks)
    assert fresh.iloc[0]["task_key"] == "u0:rescue:call:2026-11-09"


def test_renewal_and_quarter_periods() -> None:
    renewal = [Playbook.model_validate(p) for p in DEFAULT_PLAYBOOKS if p["name"] == "renewal-120"]
    _, tasks, _ = select(scores(1), renewal, NOW, 10)
    assert tasks.iloc[0]["task_key"] == "u0:renewal-120:renewal-prep-120:2027-02-09"
    assert tasks.iloc[0]["subject"] == "Renewal in 120 days: plan it (2027-02-09)"
    assert not tasks.iloc[0]["budgeted"]
    quarterly = book(repeat="quarter")
    _, tasks, _ = select(scores(1), [quarterly], NOW, 10)
    assert tasks.iloc[0]["period"] == "2026Q4"


def test_holdout_is_stable_and_nested() -> None:
    s = scores(400)
    a1, t1, _ = select(s, [book(holdout_share=0.2)], NOW, 1000)
    a2, _, _ = select(s.iloc[::-1], [book(holdout_share=0.2)], NOW + pd.Timedelta(days=1), 1000)
    held = set(a1[a1["held_out"]]["unified_id"])
    assert held == set(a2[a2["held_out"]]["unified_id"])  # same accounts, whatever the order or day
    assert 0.13 < len(held) / 400 < 0.27
    assert held == {u for u in s.index if holdout_draw(u) < 0.2}
    assert not held & set(t1["unified_id"])  # held-out accounts get no task
    wider, _, _ = select(s, [book(holdout_share=0.4)], NOW, 1000)
    assert held <= set(wider[wider["held_out"]]["unified_id"])


def test_alert_budget_defers_the_least_arr_at_risk() -> None:
    s = scores(5, arr=[1000.0, 5000.0, 3000.0, 2000.0, 4000.0], owner_id=["a", "a", "a", "a", "b"])
    renewal = [Playbook.model_validate(p) for p in DEFAULT_PLAYBOOKS if p["name"] == "renewal-120"]
    _, tasks, _ = select(s, [book(), *renewal], NOW, tasks_per_week=2)
    rescue = tasks[tasks["playbook"] == "rescue"].set_index("unified_id")["status"].to_dict()
    assert rescue == {"u0": "deferred", "u1": "new", "u2": "new", "u3": "deferred", "u4": "new"}
    assert "alert budget" in tasks.set_index("task_key").loc["u0:rescue:call:2026-11-01", "deferred_reason"]
    assert (tasks[tasks["playbook"] == "renewal-120"]["status"] == "new").all()  # not budgeted
    # tasks created earlier this week count: csm "a" already had one
    recent = pd.DataFrame({"task_key": ["old"], "owner_id": ["a"], "created_at": [NOW - pd.Timedelta(days=2)],
                           "budgeted": [True]})
    _, tasks, _ = select(s, [book()], NOW, 2, None, recent)
    assert tasks.set_index("unified_id")["status"].to_dict() == {
        "u0": "deferred", "u1": "new", "u2": "deferred", "u3": "deferred", "u4": "new"}


def test_templates_render_missing_values_and_reject_unknown_fields() -> None:
    assert render("{name}: {churn_probability:.0%}", {"name": "X", "churn_probability": None}) == "X: n/a"
    with pytest.raises(ValidationError, match=r"unknown template field \{health\}"):
        Step(key="k", subject="Health {health}")
    with pytest.raises(ValidationError, match="bad template"):
        Step(key="k", subject="Health {health_score")
    with pytest.raises(ValidationError, match="not both"):
        Step(key="k", subject="s", due_in_days=1, due_in_hours=2)


def test_default_playbooks_follow_practice() -> None:
    books = {p["name"]: Playbook.model_validate(p) for p in DEFAULT_PLAYBOOKS}
    assert books["red-escalation"].steps[0].due_in_hours == 24
    assert books["yellow-intervention"].steps[0].due_in_hours == 48
    assert {f"renewal-{d}" for d in (120, 90, 60, 30)} <= set(books)
    reasons = {r for b in books.values() for r in (b.when.reason or [])}
    assert reasons == {"price", "competitor", "low_adoption", "support", "payment_failure", "lost_champion"}
