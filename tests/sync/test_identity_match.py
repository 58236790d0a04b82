"""The pure parts of identity unification: normalisation, grouping under constraints, stable ids."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from retention_hub.sync.identity_cluster import Grouping, assign_ids
from retention_hub.sync.identity_normalize import (email_domain, external_ids, free_mail_domains, normalize_country,
                                                   normalize_domain, normalize_name)


@pytest.mark.parametrize("raw, expected", [
    ("Acme, Inc.", "acme"), ("ACME B.V.", "acme"), ("Sapphire Robotics Pty Ltd", "sapphire robotics"),
    ("Zürich Versicherung AG", "zurich versicherung"), ("Dawn Cloud IndustriesInc", "dawn cloud industries"),
    ("OAKRIDGE BRANDS SERVICES NC", "oakridge brands services"),  # "Inc" mistyped
    ("Northwind Logistics Co", "northwind logistics co"),  # "Co" may be part of the name: kept
    ("Foo & Bar GmbH", "foo and bar"), ("Inc", "inc"), ("   ", None), (None, None),
])
def test_normalize_name(raw: str | None, expected: str | None) -> None:
    assert normalize_name(raw) == expected


def test_domains_emails_countries_and_ids() -> None:
    assert normalize_domain("https://www.Acme.com/about?x=1") == "acme.com"
    assert normalize_domain("www.acme.co.uk/") == "acme.co.uk"
    assert normalize_domain("not a domain") is None
    free = free_mail_domains(["corpmail.example"])
    assert email_domain("Bob@Acme.com", free) == "acme.com"
    assert email_domain("bob@gmail.com", free) is None and email_domain("x@corpmail.example", free) is None
    assert normalize_country("United Kingdom") == "GB" and normalize_country("usa") == "US"
    assert normalize_country("DE") == "DE" and normalize_country("") is None
    assert external_ids('{"salesforce":"001A","stripe":""}') == {"salesforce": "001A"}
    assert external_ids('{"a\\"b":"c"}') == {'a"b': "c"} and external_ids("{}") is None


def test_grouping_refuses_unions_that_break_a_constraint() -> None:
    g = Grouping(6, labels={0: {"domain:x": 0}, 1: {"domain:x": 1}}, cannot=[(2, 3)])
    assert g.union(0, 4) == "joined"
    assert g.union(4, 1) == "blocked"  # 4 now sits with 0: a different company on domain x
    assert g.union(2, 5) == "joined" and g.union(5, 3) == "blocked"
    assert g.union(0, 4) == "same"
    assert g.find(4) == g.find(0) and g.find(1) != g.find(0)


def test_assign_ids_keeps_moves_merges_and_splits() -> None:
    keys = [f"s|account|{i}" for i in range(6)]
    created = {"u_old": datetime(2025, 1, 1, tzinfo=timezone.utc), "u_new": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    # before: 0,1,2 were u_new; 3,4 were u_old; 5 is new
    previous = ["u_new", "u_new", "u_new", "u_old", "u_old", None]
    # now 0..4 are one group (a merge), 5 alone
    plan = assign_ids(np.array([0, 0, 0, 0, 0, 5]), keys, previous, {"u_new", "u_old"}, created, {}, {"u_new", "u_old"})
    assert plan.ids[0] == "u_old"  # the older id survives a merge, even with fewer records
    assert plan.merged == {"u_new": "u_old"}
    assert sorted(e["event"] for e in plan.events) == ["merge", "new"]
    # a split: the larger part keeps the id, the smaller gets a new one
    plan = assign_ids(np.array([0, 0, 2, 3, 3, 5]), keys, ["u_a", "u_a", "u_a", "u_b", "u_b", None],
                      {"u_a", "u_b"}, {}, {}, {"u_a", "u_b"})
    assert plan.ids[0] == "u_a" and plan.ids[3] == "u_b" and plan.ids[2] not in ("u_a", "u_b")
    assert {(e["event"], e["other_id"]) for e in plan.events} == {("split", "u_a"), ("new", None)}
    # a pinned group takes its id; the group that held it before gets a new one
    plan = assign_ids(np.array([0, 0, 2]), keys[:3], ["u_a", "u_a", None], {"u_a"}, {}, {2: "u_a"}, {"u_a"})
    assert plan.ids[2] == "u_a" and plan.ids[0] != "u_a"
