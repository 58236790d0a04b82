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
        {"name": "usage_trend", "weight": 3, "feature": "active_users_trend_30d",
         "direction": "higher_is_better", "method": "percentile"},
        {"name": "seat_utilization", "weight": 2, "feature": "seat_utilization",
         "direction": "higher_is_better", "thresholds": [0.3, 0.5, 0.7, 0.9]},
        {"name": "support_load", "weight": 1.5, "feature": "high_priority_tickets_90d",
         "direction": "lower_is_better", "thresholds": [0.5, 1.5, 3.5, 6.5]},
        {"name": "satisfaction", "weight": 1, "feature": "csat_90d",
         "direction": "higher_is_better", "thresholds": [0.5, 0.7, 0.85, 0.95]},
        {"name": "billing", "weight": 2, "feature": "failed_payments_90d",
         "direction": "lower_is_better", "thresholds": [0.5, 1.5, 2.5]},
        {"name": "engagement", "weight": 1, "feature": "days_since_last_activity",
         "direction": "lower_is_better", "thresholds": [7, 14, 30, 60]},
    ],
}]

DEFAULT_PLAYBOOKS: list[dict[str, Any]] = [
    {"name": "renewal-at-risk", "when": {"tier": ["red"], "days_to_renewal_lte": 120},
     "steps": [{"key": "exec-call", "subject": "Executive sponsor call before renewal",
                "description": "Health is red with a renewal coming up: agree a success plan.",
                "due_in_days": 5, "priority": "high"},
               {"key": "renewal-plan", "subject": "Write the renewal plan", "due_in_days": 10}]},
    {"name": "adoption-rescue", "when": {"tier": ["yellow", "red"], "reason": ["low_adoption"]},
     "steps": [{"key": "usage-review", "subject": "Review product usage with the customer",
                "due_in_days": 7, "priority": "high"},
               {"key": "training", "subject": "Offer a training session", "due_in_days": 14}]},
    {"name": "support-recovery", "when": {"tier": ["yellow", "red"], "reason": ["support"]},
     "steps": [{"key": "ticket-review", "subject": "Review open and escalated tickets",
                "due_in_days": 3, "priority": "high"}]},
    {"name": "billing-recovery", "when": {"reason": ["payment_failure"]},
     "steps": [{"key": "billing-contact", "subject": "Contact billing about failed payments",
                "due_in_days": 2, "priority": "high"}]},
]
