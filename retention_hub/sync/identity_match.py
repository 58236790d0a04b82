"""Identity matching: candidate pairs and their confidence, as pure functions on frames.

Input is `identity_normalize`'s frames: one row per account-level record, its domains and the
contacts. Output is `Evidence`: scored edges between record positions, grouping constraints and the
conflicts seen. Evidence, in order of trust:

  external_id   a record names another system's id (Stripe metadata, Zendesk external_id, HubSpot
                salesforceaccountid, Salesforce Stripe_Customer_Id__c, the warehouse's stripe id)
  domain        records share a company domain (email_domain when one side knows it only from e-mail);
                the names on a domain decide how many companies it holds: one company, every record on
                it is linked; several (a subsidiary on its parent's domain, two firms on one stem), a
                record is linked only to the company its name names, and the domain is a conflict
  email         one person's e-mail on both records (a Zendesk requester also a Salesforce contact, a
                Stripe billing e-mail that is a contact's e-mail)
  name          the same normalised name (legal suffixes, case, punctuation removed) for records that
                have no domain; country agreement raises the confidence, disagreement drops it
  fuzzy_name    (`identity_fuzzy`, for records still alone) names close by rapidfuzz's
                token_sort_ratio, inside blocks; confidence from similarity, country, domains and
                parents; below auto-accept at default settings, so these land in review

Confidences are in `CONFIDENCE`; `identity.unify` accepts edges at or above `auto_accept`, queues
those at or above `review_threshold` for review, and drops the rest.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz.distance import OSA

CONFIDENCE = {
    "override": 1.0,
    "external_id": 0.99,
    "external_id_conflict": 0.8,  # one record claimed by two of another system's records
    "domain_name": 0.97,  # same domain, same normalised name
    "domain_typo": 0.95,  # same domain, names one edit apart
    "domain_single": 0.95,  # same domain, one company on it; the other record's name is missing or short
    "domain_nameless": 0.93,  # same domain, no record on it has a name
    "domain_prefix": 0.92,  # a domain of several companies; the short name fits exactly one
    "domain_ambiguous": 0.7,  # a domain of several companies; the record could be any of them
    "country_clash": 0.8,  # cap for domain evidence when both countries are known and differ
    "email": 0.93,  # one person's company e-mail on both records (contacts, a billing e-mail)
    "email_free_mail": 0.85,  # the same free-mail address on both: people's addresses collide
    "email_country_clash": 0.7,
    "name_country": 0.93,  # same name, same country, no domain on one side
    "name_unique": 0.91,  # same multi-word name, a country unknown, the name on one company only
    "name_ambiguous": 0.75,  # same name on records of several domains or countries
}
METHOD_RANK = {"override": 0, "external_id": 1, "domain": 2, "email_domain": 3, "email": 4, "name": 5,
               "fuzzy_name": 6}
SHARED_PROVIDER_COMPANIES = 25  # a domain naming more companies than this is a shared provider: ignored
MAX_AMBIGUOUS = 3  # a record ambiguous between more candidates than this gets no review rows
MAX_SHARED_EMAIL = 4  # an e-mail on more account records than this is a shared inbox, not a person


@dataclass
class Evidence:
    """Scored edges between record positions, plus what constrains grouping and what looked wrong."""

    parts: list[pd.DataFrame] = field(default_factory=list)
    pending: list[tuple[int, int, float, str, str]] = field(default_factory=list)
    labels: dict[int, dict[str, Any]] = field(default_factory=dict)  # pos -> {namespace: value}
    cannot: list[tuple[int, int]] = field(default_factory=list)
    conflicts: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (kind, subject, detail)

    def add(self, a: int, b: int, confidence: float, method: str, reason: str) -> None:
        self.pending.append((a, b, confidence, method, reason))

    def add_many(self, a: Any, b: Any, confidence: Any, method: Any, reason: Any) -> None:
        self.parts.append(pd.DataFrame({"a": np.asarray(a, dtype=np.int64), "b": np.asarray(b, dtype=np.int64),
                                        "confidence": confidence, "method": method, "reason": reason}))

    def frame(self) -> pd.DataFrame:
        """Edges (a < b), best first, each pair once with its strongest evidence."""
        parts = [*self.parts, pd.DataFrame(self.pending, columns=["a", "b", "confidence", "method", "reason"])]
        edges = pd.concat([p for p in parts if len(p)] or parts[-1:], ignore_index=True)
        a, b = edges["a"].to_numpy(dtype=np.int64), edges["b"].to_numpy(dtype=np.int64)
        edges["a"], edges["b"] = np.minimum(a, b), np.maximum(a, b)
        edges["confidence"] = edges["confidence"].astype(float).round(4)
        edges = edges[edges["a"] != edges["b"]]
        rank = edges["method"].map(METHOD_RANK).fillna(9).to_numpy()
        order = np.lexsort((edges["b"].to_numpy(), edges["a"].to_numpy(), rank, -edges["confidence"].to_numpy()))
        edges = edges.iloc[order]
        return edges.drop_duplicates(["a", "b"], ignore_index=True)


def _clash(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Both countries known (codes >= 0) and different."""
    return (c1 >= 0) & (c2 >= 0) & (c1 != c2)


def _country_clash(c1: str | None, c2: str | None) -> bool:
    return c1 is not None and c2 is not None and c1 != c2


# -- external ids ----------------------------------------------------------------------------------

def external_id_evidence(accounts: pd.DataFrame, position: dict[str, int], ev: Evidence) -> None:
    """Links from ids one system keeps of another; a record claimed by several records of one system
    is a conflict, and those links drop to review."""
    claims = []
    for pos, ext in enumerate(accounts["external_ids"].tolist()):
        if ext:
            for system, ref in ext.items():
                target = position.get(f"{system}|account|{ref}")
                if target is not None and target != pos:
                    claims.append((pos, target))
    if not claims:
        return
    found = pd.DataFrame(claims, columns=["pos", "target"]).drop_duplicates()
    source, source_id = accounts["source"].to_numpy(), accounts["source_id"].to_numpy()
    found["by"] = source[found["pos"].to_numpy()]
    found = found.sort_values(["target", "by", "pos"], kind="mergesort")
    shared = found.groupby(["target", "by"])["pos"].transform("size").to_numpy() > 1
    for (target, by), group in found[shared].groupby(["target", "by"], sort=True)["pos"]:
        ev.conflicts.append(("external_id_shared", f"{source[target]}:{source_id[target]}",
                             {"claimed_by": [f"{by}:{source_id[p]}" for p in group.tolist()]}))
    ev.add_many(found["pos"], found["target"],
                np.where(shared, CONFIDENCE["external_id_conflict"], CONFIDENCE["external_id"]), "external_id",
                np.where(shared, "ids name one another (the id is also named by another record)",
                         "ids name one another"))


# -- domains ---------------------------------------------------------------------------------------

def _same_entity(x: str, y: str) -> bool:
    """Two normalised names of one company: equal, same words in another order, or one typo apart."""
    if x == y or sorted(x.split()) == sorted(y.split()):
        return True
    return min(len(x), len(y)) >= 6 and OSA.distance(x, y, score_cutoff=1) <= 1


def _same_word(x: str, y: str) -> bool:
    return x == y or min(len(x), len(y)) >= 4 and OSA.distance(x, y, score_cutoff=1) <= 1


def _entities(names: list[str], tied: Iterable[tuple[int, int]] = ()) -> list[int]:
    """An entity number per distinct name: names one edit apart, or `tied` (index pairs named by
    one another's external ids), chain into one company."""
    label = list(range(len(names)))

    def root(i: int) -> int:
        while label[i] != i:
            i = label[i]
        return i

    pairs = [(i, j) for i in range(len(names)) for j in range(i) if _same_entity(names[i], names[j])]
    for i, j in [*pairs, *tied]:
        ri, rj = root(i), root(j)
        if ri != rj:
            label[max(ri, rj)] = min(ri, rj)
    return [root(i) for i in range(len(names))]


def domain_evidence(accounts: pd.DataFrame, domains: pd.DataFrame, ev: Evidence) -> None:
    """Links between records that share a domain, split by the companies the names on it name (two
    names one record's external id ties to the other's are one company however they are spelt).
    Domains with one spelling of one name (the usual case) are linked in bulk; the rest one by one."""
    name_code, first_code = accounts["name_code"].to_numpy(), accounts["first_code"].to_numpy()
    country_code, multi = accounts["country_code"].to_numpy(), accounts["ntok"].to_numpy() > 1
    order = np.lexsort((domains["pos"].to_numpy(), domains["dom"].to_numpy()))
    d = domains.iloc[order].reset_index(drop=True)
    dom, pos = d["dom"].to_numpy(), d["pos"].to_numpy()
    width = int(dom.max()) + 1 if len(dom) else 0
    size = np.bincount(dom, minlength=width)[dom]

    def distinct(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per row: how many distinct `values` (where `mask`) the row's domain holds."""
        pairs = np.unique(dom[mask] * (int(values.max()) + 1 if len(values) else 1) + values[mask])
        return np.bincount(pairs // (int(values.max()) + 1 if len(values) else 1), minlength=width)[dom]

    named = name_code[pos] >= 0
    long_names = distinct(named & multi[pos], name_code[pos])
    short_names = distinct(named & ~multi[pos], name_code[pos])
    first_words = distinct(named, first_code[pos])
    # one company spelt one way; or one long name plus short forms of it ("acme" beside "acme tools")
    simple = (size >= 2) & (first_words <= 1) & ((long_names + short_names <= 1) | (long_names == 1))
    s = d[simple]
    if len(s):
        spos, sdom, svia = s["pos"].to_numpy(), s["dom"].to_numpy(), s["via"].to_numpy()
        snamed, slong = name_code[spos] >= 0, (name_code[spos] >= 0) & multi[spos]
        # the anchor: the group's record with the long name, else its first named record, else its first
        none = np.iinfo(np.int64).max
        first_long = pd.Series(np.where(slong, spos, none)).groupby(sdom).transform("min").to_numpy()
        first_named = pd.Series(np.where(snamed, spos, none)).groupby(sdom).transform("min").to_numpy()
        first_any = pd.Series(spos).groupby(sdom).transform("min").to_numpy()
        anchor = np.where(first_long != none, first_long, np.where(first_named != none, first_named, first_any))
        is_anchor = spos == anchor
        anchor_via = pd.Series(svia[is_anchor], index=sdom[is_anchor]).reindex(sdom).to_numpy()
        keep = ~is_anchor
        a, b = spos[keep], anchor[keep]
        group_named = first_named[keep] != none
        same_name = name_code[a] == name_code[b]
        conf = np.where(snamed[keep] & same_name, CONFIDENCE["domain_name"],
                        np.where(group_named, CONFIDENCE["domain_single"], CONFIDENCE["domain_nameless"]))
        clash = _clash(country_code[a], country_code[b])
        conf = np.where(clash, np.minimum(conf, CONFIDENCE["country_clash"]), conf)
        method = np.where((svia[keep] == "site") & (anchor_via[keep] == "site"), "domain", "email_domain")
        reason = np.where(snamed[keep] & same_name, np.where(clash, "same domain, same name; countries differ",
                                                             "same domain, same name"),
                          np.where(clash, "same domain; countries differ", "same domain"))
        ev.add_many(a, b, conf, method, reason)
    rest = d[(size >= 2) & ~simple]
    if not len(rest):
        return
    tied: dict[int, set[int]] = defaultdict(set)
    for part in ev.parts:
        sure = part[(part["method"] == "external_id") & (part["confidence"] >= CONFIDENCE["external_id"])]
        for x, y in zip(sure["a"].tolist(), sure["b"].tolist()):
            tied[x].add(y)
            tied[y].add(x)
    norm, ntok, country = accounts["norm"].to_numpy(), accounts["ntok"].to_numpy(), accounts["country"].to_numpy()
    rdom, rpos, rvia, rname = rest["dom"].to_numpy(), rest["pos"].tolist(), rest["via"].tolist(), rest["domain"].tolist()
    starts = np.flatnonzero(np.r_[True, rdom[1:] != rdom[:-1]]).tolist()
    for s0, e0 in zip(starts, [*starts[1:], len(rdom)]):
        _one_domain(rname[s0], rpos[s0:e0], rvia[s0:e0], norm, ntok, country, tied, ev)


def _one_domain(domain: str, members: list[int], vias: list[str], norm: Any, ntok: Any, country: Any,
                tied: dict[int, set[int]], ev: Evidence) -> None:
    """One domain whose records carry several names: which companies are on it, and who is which."""
    via = dict(zip(members, vias))

    def link(x: int, y: int, key: str, reason: str) -> None:
        conf = CONFIDENCE[key]
        if _country_clash(country[x], country[y]):
            conf, reason = min(conf, CONFIDENCE["country_clash"]), reason + "; countries differ"
        ev.add(x, y, conf, "domain" if via[x] == "site" and via[y] == "site" else "email_domain", reason)

    named = [m for m in members if norm[m]]
    firsts = {norm[m].split()[0] for m in named if ntok[m] > 1}
    # a one-word name beside longer ones starting with that word ("acme" by "acme tools") is short for one
    # of them, not a company of its own
    strong = [m for m in named if ntok[m] > 1 or not any(_same_word(norm[m], f) for f in firsts)]
    strong_set = set(strong)
    floating = [m for m in members if m not in strong_set]
    distinct = sorted({norm[m] for m in strong})
    index = {n: i for i, n in enumerate(distinct)}
    ties = [(index[norm[m]], index[norm[o]]) for m in strong if m in tied for o in tied[m]
            if o in strong_set and norm[o] != norm[m]]
    labels = _entities(distinct, ties)
    entities: dict[int, list[int]] = defaultdict(list)
    for m in strong:
        entities[labels[index[norm[m]]]].append(m)
    if len(entities) > SHARED_PROVIDER_COMPANIES:
        ev.conflicts.append(("shared_provider", domain, {"companies": len(entities), "records": len(members)}))
        return
    reps = {}
    for label, group in sorted(entities.items()):
        rep = reps[label] = group[0]
        for m in group[1:]:
            same = norm[m] == norm[rep]
            link(m, rep, "domain_name" if same else "domain_typo",
                 "same domain, same name" if same else "same domain, names one edit apart")
    if len(entities) <= 1:
        anchor = next(iter(reps.values()), floating[0] if floating else None)
        for m in floating:
            if m != anchor:
                link(m, anchor, "domain_single" if reps else "domain_nameless", "same domain")
        return
    # several companies on one domain: never linked by it alone; each record stays with its own name
    ev.conflicts.append(("shared_domain", domain, {"companies": sorted(
        {norm[g[0]] for g in entities.values()}), "records": len(members)}))
    for label, group in entities.items():
        for m in group:
            ev.labels.setdefault(m, {})[f"domain:{domain}"] = label
    for m in floating:
        candidates = [label for label, group in sorted(entities.items())
                      if (norm[m] is None or any(_same_word(norm[g].split()[0], norm[m]) for g in group))
                      and not all(_country_clash(country[m], country[g]) for g in group)]
        if len(candidates) == 1:
            link(m, reps[candidates[0]], "domain_prefix", f"domain {domain} holds several companies; "
                                                          "the name fits one")
        elif 1 < len(candidates) <= MAX_AMBIGUOUS:
            for label in candidates:
                link(m, reps[label], "domain_ambiguous",
                     f"domain {domain} holds several companies; the record could be any of them")


# -- people ----------------------------------------------------------------------------------------

def email_evidence(accounts: pd.DataFrame, contacts: pd.DataFrame, contact_pos: np.ndarray,
                   free_mail: frozenset[str], ev: Evidence) -> None:
    """Records that share a person: one e-mail on contacts of both (a Zendesk requester and a Salesforce
    contact), or a billing e-mail that is a contact's e-mail. An e-mail on more than a few accounts, or
    on two companies of one shared domain, proves nothing; a free-mail address (two people's
    "j.smith12@gmail.com" do collide) only earns a review."""
    linked = contact_pos >= 0
    own = accounts["email"].dropna()
    emails = pd.Series(np.r_[contacts["email"].to_numpy()[linked], own.to_numpy()], dtype=object)
    codes, uniques = pd.factorize(emails)
    free = np.array([u.rpartition("@")[2] in free_mail for u in uniques.tolist()], dtype=bool)
    pairs = pd.DataFrame({"email": codes.astype(np.int64),
                          "pos": np.r_[contact_pos[linked], own.index.to_numpy()].astype(np.int64)})
    pairs = pairs[pairs["email"] >= 0].drop_duplicates()
    size = np.bincount(pairs["email"].to_numpy())[pairs["email"].to_numpy()]
    pairs = pairs[(size >= 2) & (size <= MAX_SHARED_EMAIL)].sort_values(["email", "pos"], kind="mergesort")
    pairs["first"] = pairs.groupby("email")["pos"].transform("min")
    if ev.labels:  # drop e-mails seen on records of different companies of one shared domain
        marks = pd.DataFrame([(p, k, v) for p, found in ev.labels.items() for k, v in found.items()],
                             columns=["pos", "label", "value"])
        marks["value"] = marks["value"].astype(str)
        hit = pairs.merge(marks, on="pos")
        values = hit.drop_duplicates(["email", "label", "value"]).groupby(["email", "label"]).size()
        pairs = pairs[~pairs["email"].isin(values[values > 1].index.get_level_values("email"))]
    pairs = pairs[pairs["pos"] != pairs["first"]]
    pairs = pairs.assign(free=free[pairs["email"].to_numpy()]).sort_values("free", kind="mergesort")
    pairs = pairs.drop_duplicates(["pos", "first"])  # a company e-mail beats a free-mail one
    a, b, personal = pairs["pos"].to_numpy(), pairs["first"].to_numpy(), pairs["free"].to_numpy()
    country = accounts["country_code"].to_numpy()
    clash = _clash(country[a], country[b])
    conf = np.where(personal, CONFIDENCE["email_free_mail"], CONFIDENCE["email"])
    conf = np.where(clash, np.minimum(conf, CONFIDENCE["email_country_clash"]), conf)
    reason = np.where(personal, "the same free-mail address on both", "the same person's e-mail on both")
    ev.add_many(a, b, conf, "email", np.where(clash, np.char.add(reason.astype(str), "; countries differ"), reason))


# -- names -----------------------------------------------------------------------------------------

def name_evidence(accounts: pd.DataFrame, domains: pd.DataFrame, ev: Evidence) -> None:
    """Links by the same normalised name, for records that have no domain to be linked by."""
    has_domain = np.zeros(len(accounts), dtype=bool)
    has_domain[domains["pos"].to_numpy()] = True
    first = domains.drop_duplicates("pos")
    domain_of = dict(zip(first["pos"].tolist(), first["domain"].tolist()))
    country, ntok = accounts["country"].to_numpy(), accounts["ntok"].to_numpy()
    code = accounts["name_code"].to_numpy()
    counts = np.bincount(code[code >= 0]) if (code >= 0).any() else np.zeros(0, dtype=np.int64)
    # names held by two records or more, at least one of them without a domain
    lacking = np.zeros(len(counts), dtype=bool)
    lacking[code[(code >= 0) & ~has_domain]] = True
    wanted = np.flatnonzero((code >= 0) & (counts[np.maximum(code, 0)] > 1) & lacking[np.maximum(code, 0)])
    order = wanted[np.argsort(code[wanted], kind="mergesort")]
    codes = code[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]).tolist() if len(codes) else []
    for s, e in zip(starts, [*starts[1:], len(codes)]):
        members = order[s:e].tolist()
        domains_here = {domain_of[m] for m in members if has_domain[m]}
        countries = {country[m] for m in members} - {None}
        for m in members:
            if has_domain[m]:
                continue
            others = [o for o in members if o != m and not _country_clash(country[m], country[o])]
            if not others:
                continue
            by_domain = {domain_of[o] for o in others if has_domain[o]}
            unambiguous = len(domains_here) <= 1 and len(countries) <= 1 or (
                len(by_domain) <= 1 and country[m] is not None and countries == {country[m]})
            target = next((o for o in others if has_domain[o]), others[0])
            same_country = country[m] is not None and country[m] == country[target]
            if ntok[m] < 2 and not same_country:
                continue  # one short word and no country to go on: too weak
            if unambiguous and same_country:
                ev.add(m, target, CONFIDENCE["name_country"] - (0.05 if ntok[m] < 2 else 0), "name",
                       "same name and country")
            elif unambiguous and ntok[m] > 1:
                ev.add(m, target, CONFIDENCE["name_unique"], "name", "same name, found on one company only")
            else:
                reps = {domain_of.get(o): o for o in reversed(others)}
                if len(reps) <= MAX_AMBIGUOUS:
                    for o in reps.values():
                        ev.add(m, o, CONFIDENCE["name_ambiguous"], "name", "same name on several companies")


def parent_constraints(parent_pos: np.ndarray, ev: Evidence) -> None:
    """A record and its parent (Salesforce ParentId, HubSpot parent company) are never one customer."""
    child = np.flatnonzero(parent_pos >= 0)
    ev.cannot.extend((c, p) for c, p in zip(child.tolist(), parent_pos[child].tolist()) if c != p)


def collect_evidence(accounts: pd.DataFrame, domains: pd.DataFrame, contacts: pd.DataFrame,
                     contact_pos: np.ndarray, position: dict[str, int], parent_pos: np.ndarray,
                     free_mail: frozenset[str]) -> Evidence:
    """Every kind of evidence except fuzzy names (which run only for records left alone)."""
    ev = Evidence()
    external_id_evidence(accounts, position, ev)
    domain_evidence(accounts, domains, ev)
    email_evidence(accounts, contacts, contact_pos, free_mail, ev)
    name_evidence(accounts, domains, ev)
    parent_constraints(parent_pos, ev)
    return ev
