"""Ground truth written beside the sandbox: who is who across systems and what will happen."""
from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .population import CAUSES, HISTORY_DAYS, PLANS, SEGMENTS, Population
from .records import sf_date


def write(directory: Path, pop: Population, customers: Sequence[Any], at: Callable[[float], datetime],
          mrr: Callable[[int, Any], int]) -> None:
    """identity.csv, outcomes.csv and customers.csv (see the README for their columns)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = HISTORY_DAYS
    with open(directory / "identity.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer_key", "source", "source_id"])
        for c in customers:
            rows = [("salesforce", x) for x in c.sf_ids] + [("hubspot", x) for x in c.hs_ids]
            rows += [("zendesk", c.zd_org)] if c.zd_org is not None else []
            rows += [("stripe", c.stripe_id)] if c.stripe_id and c.sub_id else []
            out.writerows((c.key, s, x) for s, x in rows)
    with open(directory / "outcomes.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer_key", "churns_90d", "churn_date", "reason", "arr_minor", "p_true"])
        for i, c in enumerate(customers):
            if not (pop.start_day[i] <= now < pop.churn_day[i]):
                continue
            churns = pop.churn_day[i] <= now + 90
            out.writerow([c.key, int(churns), sf_date(at(pop.churn_day[i])) if churns else "",
                          CAUSES[pop.churn_reason[i]] if churns else "", mrr(i, c) * 12, f"{pop.p_true[i]:.6f}"])
    with open(directory / "customers.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer_key", "name", "domain", "country", "segment", "parent_key", "plan", "billing",
                      "start_date", "churn_date", "churn_reason", "workspace_id"])
        for i, c in enumerate(customers):
            churned = pop.churn_day[i] < pop.days
            out.writerow([c.key, c.base, c.domain, c.country, SEGMENTS[pop.segment[i]],
                          customers[c.parent].key if c.parent is not None else "", PLANS[pop.segment[i]],
                          "annual" if pop.annual[i] else "monthly", sf_date(at(pop.start_day[i])),
                          sf_date(at(pop.churn_day[i])) if churned else "",
                          CAUSES[pop.churn_reason[i]] if churned else "", c.workspace])


def outcomes_by_unified(directory: Path, accounts: Mapping[tuple[str, str], str]) -> Any:
    """outcomes.csv (read from `directory`/truth) as a DataFrame indexed by unified id: each truth
    customer gets the unified id most of its records got (`accounts`: sync.identity.account_map);
    customers the hub never saw are left out."""
    import pandas as pd

    ident = pd.read_csv(directory / "truth" / "identity.csv", dtype=str)
    ident["uid"] = [accounts.get((s, i)) for s, i in zip(ident["source"], ident["source_id"])]
    key_uid = ident.dropna().groupby("customer_key")["uid"].agg(lambda v: v.mode()[0])
    out = pd.read_csv(directory / "truth" / "outcomes.csv", dtype={"customer_key": str, "reason": str})
    out["uid"] = out["customer_key"].map(key_uid)
    return out.dropna(subset=["uid"]).drop_duplicates("uid").set_index("uid")
