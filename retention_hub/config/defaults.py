"""Default values of hub.yaml that are more than a scalar: CRM field names, the default scorecard and
playbooks. Scorecard features name columns that the scoring stage's feature table must provide;
churn reasons use the sandbox's cause names (price, competitor, low_adoption, support,
payment_failure, lost_champion)."""
from __future__ import annotations

from typing import Any

DEFAULT_STORE_URL = "sqlite:///.rhub/hub.db"

DEFAULT_SALESFORCE_FIELDS: dict[str, str] = {
    "health_score": "Health_Score__c", "tier": "Health_Tier__c",
    "previous_score": "Previous_Health_Score__c", "trend": "Health_Trend__c",
    "churn_probability": "Churn_Probability__c", "churn_reason": "Churn_Reason__c",
    "top_drivers": "Health_Drivers__c", "playbook": "Retention_Playbook__c",
    "next_best_action": "Next_Best_Action__c", "unified_id": "Retention_Hub_Id__c",
    "last_computed_at": "Health_Computed_At__c",
}
DEFAULT_HUBSPOT_PROPERTIES: dict[str, str] = {
    "health_score": "retention_health_score", "tier": "retention_health_tier",
    "previous_score": "retention_previous_score", "trend": "retention_health_trend",
    "churn_probability": "retention_churn_probability", "churn_reason": "retention_churn_reason",
    "top_drivers": "retention_top_drivers", "playbook": "retention_playbook",
    "next_best_action": "retention_next_best_action", "unified_id": "retention_hub_id",
    "last_computed_at": "retention_last_computed_at",
}

DEFAULT_SCORECARDS: list[dict[str, Any]] = [{
    "name": "default",
    "components": [
        # flat usage is healthy: only a fall costs points
        {"name": "usage_trend", "weight": 3, "feature": "active_users_trend_30d",
         "direction": "higher_is_better", "thresholds": [-0.5, -0.3, -0.15, -0.05]},
        # daily active users per paid seat: about half on a working day is typical of a healthy team
        {"name": "seat_utilization", "weight": 3, "feature": "seat_utilization",
         "direction": "higher_is_better", "thresholds": [0.15, 0.25, 0.35, 0.45]},
        {"name": "support_load", "weight": 1.5, "feature": "high_priority_tickets_90d",
         "direction": "lower_is_better", "thresholds": [0.5, 1.5, 3.5, 6.5]},
        {"name": "satisfaction", "weight": 1, "feature": "csat_90d",
         "direction": "higher_is_better", "thresholds": [0.5, 0.7, 0.85, 0.95]},
        {"name": "billing", "weight": 2, "feature": "failed_payments_90d",
         "direction": "lower_is_better", "thresholds": [0.5, 1.5, 2.5]},
        # small accounts are touched a few times a year: only long silence costs points
        {"name": "engagement", "weight": 0.5, "feature": "days_since_last_activity",
         "direction": "lower_is_better", "thresholds": [30, 60, 120, 240]},
    ],
}]

DEFAULT_TICKET_TOPICS: dict[str, dict[str, list[str]]] = {
    "pricing": {"tags": ["pricing", "discount", "billing_question"],
                "words": ["price", "pricing", "discount", "seat count", "too expensive", "cost"]},
    "export": {"tags": ["data_export", "export", "migration", "cancellation"],
               "words": ["export", "migrat", "cancel our", "terminate"]},
}

_WHY = ("Health {health_score:.0f}/100 ({tier}, was {previous_score}); churn risk {churn_probability:.0%}; "
        "likely reason: {churn_reason} ({evidence}). Drivers: {drivers}.")


def _renewal(days: int, priority: str, subject: str) -> dict[str, Any]:
    return {"name": f"renewal-{days}", "repeat": "renewal",
            "when": {"days_to_renewal_lte": days, "days_to_renewal_gte": days - 29},
            "holdout_share": 0.0, "budgeted": False,  # renewal preparation is operations, not an experiment
            "steps": [{"key": f"renewal-prep-{days}", "subject": subject + " ({renewal_date})",
                       "description": "Renewal of {name} ({arr}) on {renewal_date}. " + _WHY,
                       "due_in_days": 7, "priority": priority}]}


# in order: the first matching playbook is the account's playbook in the CRM; every matching one
# creates its tasks (within the alert budget)
DEFAULT_PLAYBOOKS: list[dict[str, Any]] = [
    {"name": "red-escalation", "when": {"tier": ["red"]},
     "steps": [{"key": "exec-escalation", "subject": "Executive escalation: {name} is red",
                "description": _WHY + " Agree a rescue plan with an executive sponsor.",
                "due_in_hours": 24, "priority": "high", "owner": "manager"}]},
    {"name": "payment-recovery", "when": {"reason": ["payment_failure"], "tier": ["yellow", "red"]},
     "steps": [{"key": "billing-contact", "subject": "Fix failed payments with {name}'s billing contact",
                "description": _WHY, "due_in_days": 2, "priority": "high"}]},
    {"name": "support-recovery", "when": {"reason": ["support"], "tier": ["yellow", "red"]},
     "steps": [{"key": "ticket-review", "subject": "Review {name}'s open and escalated tickets with support",
                "description": _WHY, "due_in_days": 3, "priority": "high"}]},
    {"name": "adoption-rescue", "when": {"reason": ["low_adoption"], "tier": ["yellow", "red"]},
     "steps": [{"key": "usage-review", "subject": "Usage review and training offer for {name}",
                "description": _WHY, "due_in_days": 5, "priority": "high"}]},
    {"name": "value-review", "when": {"reason": ["price"], "tier": ["yellow", "red"]},
     "steps": [{"key": "roi-review", "subject": "ROI and packaging review with {name}",
                "description": _WHY + " They are asking about price: show the value delivered before discussing terms.",
                "due_in_days": 5, "priority": "high"}]},
    {"name": "competitive-defense", "when": {"reason": ["competitor"], "tier": ["yellow", "red"]},
     "steps": [{"key": "competitive-call", "subject": "Competitive risk at {name}: call the sponsor",
                "description": _WHY + " Signs of evaluating or moving to another product.",
                "due_in_days": 3, "priority": "high"}]},
    {"name": "champion-replacement", "when": {"reason": ["lost_champion"], "tier": ["yellow", "red"]},
     "steps": [{"key": "new-champion", "subject": "Find and onboard a new champion at {name}",
                "description": _WHY, "due_in_days": 5, "priority": "high"}]},
    {"name": "yellow-intervention", "when": {"tier": ["yellow"]},
     "steps": [{"key": "csm-intervention", "subject": "Check in with {name}: health is yellow",
                "description": _WHY, "due_in_hours": 48, "priority": "normal"}]},
    _renewal(120, "normal", "Renewal in 120 days: plan it"),
    _renewal(90, "normal", "Renewal in 90 days: success review"),
    _renewal(60, "high", "Renewal in 60 days: send the quote"),
    _renewal(30, "high", "Renewal in 30 days: close it"),
    {"name": "green-check-in", "when": {"tier": ["green"]}, "repeat": "quarter", "holdout_share": 0.0,
     "steps": [{"key": "check-in", "subject": "Quarterly check-in with {name}", "description": _WHY,
                "due_in_days": 14, "priority": "low"}]},
]
