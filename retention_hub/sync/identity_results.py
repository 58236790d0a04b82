"""What a unification produces, built from the grouped records: each record's link (method,
confidence, status), the review queue, the conflicts, one row per unified account, the people links
and the summary counts. Pure functions on frames; `identity_write` stores them."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from .identity_cluster import Grouping

SOURCE_ORDER = {"salesforce": 0, "hubspot": 1, "stripe": 2, "zendesk": 3, "usage": 4}  # whose name/country wins
MAX_REVIEW_PER_RECORD = 3


def best_links(accounts: pd.DataFrame, edges: pd.DataFrame, accept: float, pinned: set[int]) -> pd.DataFrame:
    """Per record: the strongest accepted evidence inside its group (method, confidence, status);
    "unmatched" with confidence 0 for a record linked to nothing."""
    roots = accounts["root"].to_numpy()
    sure = edges[edges["confidence"].to_numpy() >= accept]
    sure = sure[roots[sure["a"].to_numpy()] == roots[sure["b"].to_numpy()]]
    pos = np.r_[sure["a"].to_numpy(), sure["b"].to_numpy()]
    conf = np.r_[sure["confidence"].to_numpy(), sure["confidence"].to_numpy()]
    method = np.r_[sure["method"].to_numpy(dtype=object), sure["method"].to_numpy(dtype=object)]
    order = np.lexsort((-conf, pos))  # by record, best first
    pos, conf, method = pos[order], conf[order], method[order]
    first = np.r_[True, pos[1:] != pos[:-1]] if len(pos) else np.zeros(0, dtype=bool)
    out_method = np.full(len(accounts), "unmatched", dtype=object)
    out_conf = np.zeros(len(accounts))
    out_method[pos[first]], out_conf[pos[first]] = method[first], conf[first]
    status = np.where(out_method == "override", "override", "accepted").astype(object)
    status[list(pinned)] = "override"
    return pd.DataFrame({"method": out_method, "confidence": out_conf, "status": status}, index=accounts.index)


def review_rows(accounts: pd.DataFrame, edges: pd.DataFrame, grouping: Grouping, review: float,
                accept: float) -> list[dict[str, Any]]:
    """Candidate pairs between different unified accounts, at or above `review` and below `accept`,
    that no constraint rules out; the best per pair of accounts, a few per record."""
    roots = accounts["root"].to_numpy()
    conf = edges["confidence"].to_numpy()
    maybe = edges[(conf >= review) & (conf < accept)]
    maybe = maybe[roots[maybe["a"].to_numpy()] != roots[maybe["b"].to_numpy()]]
    src, sid, name, uid = (accounts[c].to_numpy() for c in ("source", "source_id", "name", "unified_id"))
    seen: set[tuple[int, int]] = set()
    per_record: Counter[int] = Counter()
    rows = []
    for a, b, c, method, reason in maybe[["a", "b", "confidence", "method", "reason"]].itertuples(index=False):
        ra, rb = roots[a], roots[b]
        pair = (min(ra, rb), max(ra, rb))
        if pair in seen or per_record[a] >= MAX_REVIEW_PER_RECORD or per_record[b] >= MAX_REVIEW_PER_RECORD \
                or not grouping.allowed(ra, rb):
            continue
        seen.add(pair)
        per_record[a] += 1
        per_record[b] += 1
        left, right = sorted((a, b), key=lambda p: (src[p], sid[p]))
        rows.append({"left_source": src[left], "left_id": sid[left], "right_source": src[right],
                     "right_id": sid[right], "left_unified_id": uid[left], "right_unified_id": uid[right],
                     "left_name": name[left], "right_name": name[right], "method": method,
                     "confidence": float(c), "reason": reason})
    return rows


def mark_review(best: pd.DataFrame, position: dict[str, int], review: list[dict[str, Any]]) -> None:
    """A record with no accepted link but a queued candidate shows that candidate, status "review"."""
    method, confidence, status = (best[c].to_numpy(dtype=object).copy() for c in ("method", "confidence", "status"))
    for row in sorted(review, key=lambda r: r["confidence"]):  # the best candidate is written last
        for side in ("left", "right"):
            pos = position[f"{row[f'{side}_source']}|account|{row[f'{side}_id']}"]
            if (method[pos] == "unmatched" and status[pos] != "override") or status[pos] == "review":
                method[pos], confidence[pos], status[pos] = row["method"], row["confidence"], "review"
    best["method"], best["confidence"], best["status"] = method, confidence.astype(float), status


def conflict_rows(accounts: pd.DataFrame, found: list, edges: pd.DataFrame, blocked: list[int],
                  domains: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, subject) -> detail, with the unified ids involved where there are some."""
    uid = accounts["unified_id"].to_numpy()
    key = (accounts["source"] + ":" + accounts["source_id"]).to_numpy()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    shared = {subject for kind, subject, _ in found if kind in ("shared_domain", "shared_provider")}
    on_domain: dict[str, list[int]] = {}
    hit = domains[domains["domain"].isin(shared)]
    for domain, pos in zip(hit["domain"].tolist(), hit["pos"].tolist()):
        on_domain.setdefault(domain, []).append(pos)
    for kind, subject, detail in found:
        if kind in ("shared_domain", "shared_provider"):
            detail = {**detail, "unified_ids": sorted({uid[p] for p in on_domain.get(subject, [])})}
        out[(kind, subject)] = detail
    for a, b, method, conf, reason in edges.loc[blocked, ["a", "b", "method", "confidence", "reason"]].itertuples(
            index=False):
        out[("blocked_link", f"{key[a]} ~ {key[b]}")] = {
            "method": method, "confidence": float(conf), "reason": reason, "unified_ids": sorted({uid[a], uid[b]})}
    return out


def unified_rows(accounts: pd.DataFrame, domains: pd.DataFrame, parent_pos: np.ndarray) -> pd.DataFrame:
    """One row per unified account: name, domain and country from the most trusted source that has
    them, its sources and size, and the parent account (the one most members' parents are in)."""
    roots = accounts["root"].to_numpy()
    site = domains[domains["via"] == "site"].drop_duplicates("pos")
    mail = domains.drop_duplicates("pos")
    domain = np.full(len(accounts), None, dtype=object)
    domain[mail["pos"].to_numpy()] = mail["domain"].to_numpy()
    domain[site["pos"].to_numpy()] = site["domain"].to_numpy()
    rank = accounts["source"].map(SOURCE_ORDER).fillna(9).to_numpy()
    order = np.lexsort((np.arange(len(accounts)), rank, roots))
    r = roots[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if len(r) else np.zeros(0, dtype=np.int64)
    out = pd.DataFrame(index=pd.Index(r[starts], name="root"))
    for column, values in (("name", accounts["name"].to_numpy()), ("domain", domain),
                           ("country", accounts["country"].to_numpy())):
        v = values[order]
        present = pd.notna(v)
        # first present value per group: the most trusted source that has one
        firsts = pd.Series(np.where(present, np.arange(len(v)), len(v))).groupby(r).min().to_numpy()
        out[column] = [v[i] if i < len(v) else None for i in firsts]
    code, names = pd.factorize(accounts["source"], sort=True)
    pairs = np.unique(np.stack([roots, code]), axis=1)  # sorted by group, then source name
    pr, ps = pairs[0], [names[c] for c in pairs[1].tolist()]
    bounds = np.flatnonzero(np.r_[True, pr[1:] != pr[:-1]]).tolist() if len(pr) else []
    joined = pd.Series([",".join(ps[a:b]) for a, b in zip(bounds, [*bounds[1:], len(ps)])],
                       index=pr[bounds] if len(pr) else [], dtype=object)
    out["sources"] = joined.reindex(out.index).to_numpy()
    out["members"] = np.bincount(roots)[out.index.to_numpy()]
    has = parent_pos >= 0
    parents = pd.DataFrame({"child": roots[has], "parent": roots[parent_pos[has]]})
    parents = parents[parents["child"] != parents["parent"]]
    top = parents.groupby(["child", "parent"]).size().rename("n").reset_index()
    top = top.sort_values(["child", "n", "parent"], ascending=[True, False, True]).drop_duplicates("child")
    out["parent_root"] = top.set_index("child")["parent"].reindex(out.index).fillna(-1).astype(np.int64).to_numpy()
    return out


def people_links(accounts: pd.DataFrame, contacts: pd.DataFrame, contact_pos: np.ndarray, domains: pd.DataFrame,
                 free_mail: frozenset[str]) -> pd.DataFrame:
    """Each contact's unified account: through its account reference; else its exact e-mail seen on a
    contact of exactly one unified account; else its e-mail's company domain when exactly one unified
    account has that domain. (source, kind, source_id, unified_id or None, email, method)."""
    roots = accounts["root"].to_numpy()
    linked = contact_pos >= 0
    group = np.where(linked, roots[np.maximum(contact_pos, 0)], -1)  # work on group numbers, not id strings
    method = np.where(linked, "account_ref", "unmatched").astype(object)
    email = contacts["email"].to_numpy(dtype=object)
    if not linked.all():
        code, uniques = pd.factorize(email)
        known = np.unique(np.stack([code, group])[:, linked & (code >= 0)], axis=1)
        owners_per_email = np.bincount(known[0], minlength=len(uniques))
        by_email = np.full(len(uniques), -1, dtype=np.int64)
        single = owners_per_email[known[0]] == 1
        by_email[known[0][single]] = known[1][single]
        todo = ~linked & (code >= 0)
        found = np.where(todo, by_email[np.maximum(code, 0)], -1)
        hit = found >= 0
        group[hit], method[hit] = found[hit], "email"
        todo &= ~hit
        if todo.any():
            owners = np.unique(np.stack([domains["dom"].to_numpy(), roots[domains["pos"].to_numpy()]]), axis=1)
            per_domain = np.bincount(owners[0], minlength=int(owners[0].max()) + 1 if owners.size else 0)
            alone = per_domain[owners[0]] == 1
            domain_names = pd.Series(domains["domain"].to_numpy(), index=domains["dom"].to_numpy())
            domain_names = domain_names[~domain_names.index.duplicated()]
            by_domain = pd.Series(owners[1][alone], index=domain_names.reindex(owners[0][alone]).to_numpy())
            at = pd.Series(email[todo], dtype=object).str.rpartition("@")[2]
            found = at.where(~at.isin(free_mail)).map(by_domain).to_numpy()
            idx = np.flatnonzero(todo)
            hit = pd.notna(found)
            group[idx[hit]], method[idx[hit]] = found[hit].astype(np.int64), "email_domain"
    uid = accounts[["root", "unified_id"]].drop_duplicates("root").set_index("root")["unified_id"]
    unified = np.full(len(group), None, dtype=object)
    unified[group >= 0] = uid.reindex(group[group >= 0]).to_numpy()
    return pd.DataFrame({"source": contacts["source"].to_numpy(dtype=object),
                         "kind": np.full(len(group), "contact", dtype=object),
                         "source_id": contacts["source_id"].to_numpy(dtype=object), "unified_id": unified,
                         "email": email, "method": method})


def source_pairs(accounts: pd.DataFrame) -> dict[str, int]:
    """"a+b": unified accounts holding records of both sources ("a+a": of two records of one source)."""
    roots = accounts["root"].to_numpy()
    code, sources = pd.factorize(accounts["source"])
    per = pd.DataFrame({"root": roots, "source": code}).groupby(["root", "source"]).size().reset_index(name="n")
    # per group: a bit per source present; then count the groups of each combination
    mask = np.zeros(int(roots.max()) + 1 if len(roots) else 0, dtype=np.int64)
    np.bitwise_or.at(mask, per["root"].to_numpy(), 1 << per["source"].to_numpy())
    combos, counts = np.unique(mask[np.unique(roots)], return_counts=True) if len(roots) else ([], [])
    pairs: Counter[str] = Counter()
    names = list(sources)
    for combo, n in zip(np.asarray(combos).tolist(), np.asarray(counts).tolist()):
        present = sorted(names[i] for i in range(len(names)) if combo >> i & 1)
        for i, name in enumerate(present):
            for other in present[i + 1:]:
                pairs[f"{name}+{other}"] += n
    dups = per[per["n"] > 1].groupby("source").size()
    for i, n in dups.items():
        pairs[f"{names[i]}+{names[i]}"] += int(n)
    return dict(sorted(pairs.items()))
