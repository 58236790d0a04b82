"""Scoring: point-in-time features, health scores, the churn model and its report, churn reasons, playbooks."""
