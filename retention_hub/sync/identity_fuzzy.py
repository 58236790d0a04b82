"""Fuzzy name candidates for the records no other evidence placed: rapidfuzz's token_sort_ratio
inside blocks (records sharing a word and an initial), so the cost stays near linear; each candidate
scored with country, domain and parent evidence. At default settings these never reach auto-accept:
they fill the review queue."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from .identity_match import Evidence

FUZZY_CUTOFF = 88  # token_sort_ratio below this is not a candidate
FUZZY_PER_RECORD = 5  # best candidates kept per record
FUZZY_CAP = 0.89  # a name alone never reaches the default auto-accept


def _block_keys(name: str) -> tuple[str, str]:
    """Two keys, so a typo in any one word still meets its twin in one block. A one-word name gets
    none: "Northwind" alike "Northwind" (or "Northwnd") says too little to bother a reviewer."""
    tokens = name.split()
    if len(tokens) == 1:
        return "", ""
    return f"a|{tokens[0]}|{tokens[1][0]}", f"b|{tokens[-1]}|{tokens[0][0]}"


def fuzzy_edges(accounts: pd.DataFrame, queries: Sequence[int], cluster: np.ndarray,
                domains: pd.DataFrame, parent_cluster: np.ndarray) -> Evidence:
    """Name candidates for the records in `queries` among all named records, by blocks of shared
    words (rapidfuzz cdist inside each block), scored with country, domain and parent evidence."""
    ev = Evidence()
    norm = accounts["norm"].to_numpy()
    queries = [q for q in queries if norm[q]]
    if not queries:
        return ev
    code = accounts["name_code"].to_numpy()
    uniques = pd.unique(norm[code >= 0])
    keys = np.array([_block_keys(n) for n in uniques], dtype=object).reshape(-1, 2)
    named = np.flatnonzero(code >= 0)
    record_keys = keys[code[named]]
    asked = {k for q in queries for k in keys[code[q]] if k}
    pairs: list[tuple[int, int, float]] = []
    for column in (0, 1):
        hit = pd.Series(record_keys[:, column]).isin(asked).to_numpy()
        members = pd.DataFrame({"key": record_keys[hit, column], "pos": named[hit]})
        blocks = members.groupby("key")["pos"].agg(list).to_dict() if len(members) else {}
        by_key: dict[str, list[int]] = defaultdict(list)
        for q in queries:
            if keys[code[q], column]:
                by_key[keys[code[q], column]].append(q)
        for key, qs in sorted(by_key.items()):
            choices = blocks.get(key, [])
            scores = process.cdist([norm[q] for q in qs], [norm[c] for c in choices], scorer=fuzz.token_sort_ratio,
                                   score_cutoff=FUZZY_CUTOFF, workers=1, dtype=np.uint8)
            for i, j in zip(*np.nonzero(scores)):
                q, c = qs[i], choices[j]
                if cluster[q] != cluster[c]:
                    pairs.append((q, c, scores[i, j] / 100))
    if not pairs:
        return ev
    found = pd.DataFrame(pairs, columns=["q", "c", "similarity"]).drop_duplicates(["q", "c"])
    found = found.sort_values(["q", "similarity", "c"], ascending=[True, False, True], kind="mergesort")
    found = found.groupby("q").head(FUZZY_PER_RECORD)
    domain_sets: dict[int, set[str]] = defaultdict(set)
    wanted = set(found["q"].tolist()) | set(found["c"].tolist())
    for pos, domain in zip(domains["pos"].tolist(), domains["domain"].tolist()):
        if pos in wanted:
            domain_sets[pos].add(domain)
    country = accounts["country"].to_numpy()
    for q, c, similarity in found.itertuples(index=False):
        conf, reason = _fuzzy_confidence(norm[q], norm[c], similarity, country[q], country[c],
                                         domain_sets.get(q), domain_sets.get(c), parent_cluster[q], parent_cluster[c])
        ev.add(q, c, conf, "fuzzy_name", reason)
    return ev


def _fuzzy_confidence(x: str, y: str, similarity: float, c1: Any, c2: Any, d1: set[str] | None,
                      d2: set[str] | None, p1: int, p2: int) -> tuple[float, str]:
    conf = 0.6 + (similarity - FUZZY_CUTOFF / 100) * 2  # 0.60 at the cutoff, 0.84 for equal words
    reasons = [f"names {similarity:.0%} alike"]
    if OSA.distance(x, y, score_cutoff=2) <= 2:
        conf += 0.04
        reasons.append("a typo apart")
    tx, ty = set(x.split()), set(y.split())
    if tx != ty and (tx < ty or ty < tx):
        conf -= 0.15  # one name is the other plus words: usually a different company ("Acme" / "Acme Labs")
        reasons.append("one name has extra words")
    if c1 is not None and c2 is not None:
        conf += 0.04 if c1 == c2 else -0.25
        reasons.append("same country" if c1 == c2 else "countries differ")
    if d1 and d2 and not d1 & d2:
        conf -= 0.2
        reasons.append("different domains")
    if p1 >= 0 and p2 >= 0:
        conf += 0.03 if p1 == p2 else -0.15
        reasons.append("same parent" if p1 == p2 else "different parents")
    return min(max(conf, 0.0), FUZZY_CAP), "; ".join(reasons)
