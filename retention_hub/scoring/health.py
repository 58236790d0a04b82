"""The health scorecard: weighted components, each 0-100 from one feature, per segment.

Scale direction, fixed: 100 is healthiest, 0 the least healthy. A component scores by `thresholds`
(ascending cut points splitting the feature into len+1 bands scored evenly from 0 to 100, reversed
for lower_is_better) or by `percentile` rank among the accounts the same scorecard scores. A
component whose feature is missing (NaN) for an account is left out and the others re-weighted; the
account's `missing` column lists it. Pure DataFrame functions.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..config.models import Component, Scorecard, Scoring, Tiers


def component_scores(component: Component, values: pd.Series) -> pd.Series:
    """0-100 per account (NaN where the feature is missing)."""
    values = pd.to_numeric(values, errors="coerce").astype(float)
    if component.thresholds is not None:
        cuts = np.asarray(component.thresholds, dtype=float)
        band = np.searchsorted(cuts, values.to_numpy(), side="right").astype(float)
        score = band / len(cuts) * 100
    else:
        score = values.rank(pct=True, method="average").to_numpy() * 100
    if component.direction == "lower_is_better":
        score = 100 - score
    return pd.Series(np.where(values.isna(), np.nan, score), index=values.index)


def choose_scorecards(scoring: Scoring, accounts: pd.DataFrame) -> pd.Series:
    """The scorecard name per account: the first whose segment matches, else the fallback."""
    fallback = next(s for s in scoring.scorecards if s.segment is None)
    chosen = pd.Series(fallback.name, index=accounts.index, dtype=object)
    taken = pd.Series(False, index=accounts.index)
    for card in scoring.scorecards:
        if card.segment is None:
            continue
        column = accounts[card.segment.field] if card.segment.field in accounts else pd.Series(index=accounts.index)
        match = column.astype(str).isin(card.segment.values) & ~taken
        chosen[match], taken = card.name, taken | match
    return chosen


def tier_of(score: pd.Series, tiers: Tiers) -> pd.Series:
    out = np.where(score >= tiers.green, "green", np.where(score >= tiers.yellow, "yellow", "red"))
    return pd.Series(np.where(score.isna(), None, out), index=score.index, dtype=object)


def score_card(card: Scorecard, features: pd.DataFrame) -> pd.DataFrame:
    """Score the accounts in `features` with one scorecard: health_score, component scores
    (`c_<name>`), contributions (`w_<name>`: points of the final score) and `missing`."""
    scores = pd.DataFrame({c.name: component_scores(c, features[c.feature]) if c.feature in features
                           else pd.Series(np.nan, index=features.index) for c in card.components})
    weights = pd.Series({c.name: c.weight for c in card.components}, dtype=float)
    present = scores.notna()
    share = present.mul(weights, axis=1)
    share = share.div(share.sum(axis=1).replace(0, np.nan), axis=0)  # re-weighted over what is present
    contrib = scores.fillna(0).mul(share.fillna(0))
    out = pd.DataFrame(index=features.index)
    out["health_score"] = contrib.sum(axis=1).where(present.any(axis=1)).round(1)
    for name in scores:
        out[f"c_{name}"] = scores[name].round(1)
        out[f"w_{name}"] = contrib[name].where(present[name]).round(2)
    out["missing"] = [[c for c, ok in zip(scores.columns, row) if not ok] for row in present.to_numpy()]
    out["scorecard"] = card.name
    return out


def score_health(features: pd.DataFrame, scoring: Scoring, accounts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Health for every account in `features` (index unified_id). `accounts` (same index) holds the
    fields scorecard segments select on; without it every account gets the fallback scorecard."""
    accounts = accounts.reindex(features.index) if accounts is not None else pd.DataFrame(index=features.index)
    chosen = choose_scorecards(scoring, accounts)
    parts = [score_card(card, features[chosen == card.name]) for card in scoring.scorecards
             if (chosen == card.name).any()]
    out = pd.concat(parts).reindex(features.index) if parts else pd.DataFrame(index=features.index)
    out["tier"] = tier_of(out["health_score"], scoring.tiers)
    return out


def explain(row: Mapping[str, Any], previous: Mapping[str, Any] | None = None, top: int = 3) -> str:
    """A short sentence: the components that weigh most on the score, and what moved since last time."""
    parts = {k[2:]: v for k, v in row.items() if k.startswith("c_") and pd.notna(v)}
    weakest = sorted(parts.items(), key=lambda kv: kv[1])[:top]
    text = ", ".join(f"{name.replace('_', ' ')} {score:.0f}/100" for name, score in weakest)
    if previous is not None and pd.notna(previous.get("health_score")):
        moved = {k: v - previous.get(f"c_{k}") for k, v in parts.items() if pd.notna(previous.get(f"c_{k}"))}
        biggest = sorted(moved.items(), key=lambda kv: -abs(kv[1]))[:1]
        if biggest and abs(biggest[0][1]) >= 1:
            name, delta = biggest[0]
            text += f"; since last score {name.replace('_', ' ')} {'rose' if delta > 0 else 'fell'} {abs(delta):.0f}"
    return f"Weakest: {text}" if text else "No signals"
