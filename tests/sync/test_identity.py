"""Identity unification on small hand-built record sets (SQLite always, PostgreSQL when
RHUB_TEST_POSTGRES_URL is set): every matching method, conflicts, overrides, review, stable ids."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from retention_hub.config.models import Identity
from retention_hub.connectors.records import record
from retention_hub.sync.identity import (account_map, email_map, ensure_unified, links_frame, people_map, redirects,
                                         unified_accounts, unify)
from retention_hub.sync.identity_overrides import save_decisions
from retention_hub.sync.store import Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)




def account(source: str, source_id: str, name: str | None = None, *, at: datetime = T0, deleted: bool = False,
            **fields: object) -> dict:
    fields.setdefault("external_ids", {})
    return record(source, "account", source_id, at, deleted, name=name, **fields)


def contact(source: str, source_id: str, email: str | None, account_id: str | None) -> dict:
    return record(source, "contact", source_id, T0, email=email, name=None, account_id=account_id)


def put(store: Store, *rows: dict, run: int = 1) -> None:
    store.upsert_records(rows, run_id=run)


def uid(store: Store, source: str, source_id: str) -> str:
    return account_map(store)[(source, source_id)]


def link(store: Store, source: str, source_id: str) -> dict:
    frame = links_frame(store)
    row = frame[(frame["source"] == source) & (frame["source_id"] == source_id)]
    assert len(row) == 1
    return row.iloc[0].to_dict()


def events(store: Store) -> list[tuple]:
    return [(e, u, o) for _, _, e, u, o, _ in sorted(store.read_identity("identity_events"))]


ACME = [account("salesforce", "001A", "Acme, Inc.", website="https://www.acme.com/", domain="acme.com", country="US"),
        account("hubspot", "h1", "ACME", domain="acme.com", country="United States"),
        account("zendesk", "z1", "Acme", domain_names=["acme.com"]),
        account("stripe", "cus_1", None, email="billing@acme.com", country="US")]


# -- each way of matching ----------------------------------------------------------------------------

def test_domain_website_and_billing_email_link_one_company(store: Store) -> None:
    put(store, *ACME)
    result = unify(store)
    assert result.records == 4 and result.unified == 1 and result.unmatched == 0
    assert len({uid(store, s, i) for s, i in [("salesforce", "001A"), ("hubspot", "h1"), ("zendesk", "z1"),
                                                ("stripe", "cus_1")]}) == 1
    assert link(store, "hubspot", "h1")["method"] == "domain"
    assert link(store, "hubspot", "h1")["confidence"] == pytest.approx(0.97)
    assert link(store, "stripe", "cus_1")["method"] == "email_domain"
    assert result.matched_pairs == {"hubspot+salesforce": 1, "hubspot+stripe": 1, "hubspot+zendesk": 1,
                                    "salesforce+stripe": 1, "salesforce+zendesk": 1, "stripe+zendesk": 1}
    unified = unified_accounts(store)
    assert unified.loc[0, "name"] == "Acme, Inc." and unified.loc[0, "domain"] == "acme.com"
    assert unified.loc[0, "country"] == "US" and unified.loc[0, "members"] == 4
    assert unified.loc[0, "sources"] == "hubspot,salesforce,stripe,zendesk"


def test_external_ids_link_records_whose_names_and_domains_differ(store: Store) -> None:
    put(store,
        account("salesforce", "001B", "Globex Corporation", country="US", external_ids={"stripe": "cus_9"}),
        account("stripe", "cus_9", "GLX Billing Dept", email="ap@glx-billing.example.org"),
        account("hubspot", "h9", "Globex (old)", external_ids={"salesforce": "001B"}),
        account("usage", "ws_9", "workspace 9", external_ids={"stripe": "cus_9"}))
    result = unify(store)
    assert result.unified == 1
    for key in [("stripe", "cus_9"), ("hubspot", "h9"), ("usage", "ws_9")]:
        assert link(store, *key)["method"] == "external_id"
        assert link(store, *key)["confidence"] == pytest.approx(0.99)


def test_free_mail_domains_never_link_companies(store: Store) -> None:
    put(store,
        account("stripe", "cus_a", None, email="ann@gmail.com"),
        account("stripe", "cus_b", None, email="bob@gmail.com"),
        account("salesforce", "001C", "Initrode", domain="corpmail.example", country="US"),
        account("salesforce", "001D", "Umbrella", domain="corpmail.example", country="GB"))
    assert unify(store).unified == 4  # gmail links nobody
    # corpmail.example names two companies: a shared domain, reported, never linked by itself
    assert uid(store, "salesforce", "001C") != uid(store, "salesforce", "001D")
    assert uid(store, "stripe", "cus_a") != uid(store, "stripe", "cus_b")
    conflicts = store.read_identity("identity_conflicts", ["kind", "subject"])
    assert ("shared_domain", "corpmail.example") in conflicts
    # a provider the admin adds to free_mail_domains is ignored like gmail
    put(store, account("stripe", "cus_c", None, email="carol@corpmail.example"),
        account("zendesk", "z5", None, domain_names=["corpmail.example"]), run=2)
    unify(store, Identity(free_mail_domains=["corpmail.example"]))
    assert len(set(account_map(store).values())) == 6
    assert ("shared_domain", "corpmail.example") not in store.read_identity("identity_conflicts", ["kind", "subject"])


def test_same_name_links_records_without_domains_when_the_country_agrees(store: Store) -> None:
    put(store,
        account("salesforce", "001E", "Vandelay Industries LLC", country="US"),
        account("hubspot", "h5", "Vandelay Industries", country="USA"),
        account("salesforce", "001F", "Kramerica Industries", country="US"),
        account("hubspot", "h6", "Kramerica Industries", country="DE"))
    unify(store)
    assert uid(store, "salesforce", "001E") == uid(store, "hubspot", "h5")
    assert link(store, "hubspot", "h5")["method"] == "name"
    assert uid(store, "salesforce", "001F") != uid(store, "hubspot", "h6")  # countries differ


def test_a_shared_contact_email_links_accounts(store: Store) -> None:
    put(store,
        account("salesforce", "001G", "Soylent Corp", country="US"),
        account("zendesk", "z7", "Soylent"),
        contact("salesforce", "003a", "Jane.Doe@soylent-green.example", "001G"),
        contact("zendesk", "u7", "jane.doe@soylent-green.example", "z7"))
    unify(store)
    assert uid(store, "salesforce", "001G") == uid(store, "zendesk", "z7")
    assert link(store, "zendesk", "z7")["method"] in ("email", "email_domain")


def test_a_typo_without_other_evidence_goes_to_review_not_merged(store: Store, tmp_path: Path) -> None:
    put(store,
        account("salesforce", "001H", "Initech Systems", country="US"),
        account("hubspot", "h8", "Intiech Systems", country="US"))
    result = unify(store)
    assert result.unified == 2 and result.review == 1
    assert uid(store, "salesforce", "001H") != uid(store, "hubspot", "h8")
    row = link(store, "hubspot", "h8")
    assert row["status"] == "review" and row["method"] == "fuzzy_name"
    assert 0.6 <= row["confidence"] < 0.9
    # below the review threshold: neither merged nor queued
    assert unify(store, Identity(review_threshold=0.89)).review == 0
    # with auto-accept lowered below its confidence, the same evidence merges
    unify(store, Identity(auto_accept=0.6))
    assert uid(store, "salesforce", "001H") == uid(store, "hubspot", "h8")


# -- conflicts ---------------------------------------------------------------------------------------

def test_a_domain_on_two_companies_is_a_conflict_and_a_nameless_record_on_it_waits_for_review(store: Store) -> None:
    put(store,
        account("salesforce", "001P", "Northwind Traders", domain="northwind.example", country="US"),
        account("salesforce", "001Q", "Northwind Traders Germany", domain="northwind.example", country="DE",
                parent_id="001P"),
        account("hubspot", "h10", "Northwind Traders Germany GmbH", domain="northwind.example", country="DE"),
        account("stripe", "cus_n", None, email="billing@northwind.example"))
    result = unify(store)
    assert uid(store, "salesforce", "001P") != uid(store, "salesforce", "001Q")
    assert uid(store, "salesforce", "001Q") == uid(store, "hubspot", "h10")
    assert result.conflict_kinds.get("shared_domain") == 1
    assert uid(store, "stripe", "cus_n") not in (uid(store, "salesforce", "001P"), uid(store, "salesforce", "001Q"))
    review = store.read_identity("identity_review", ["left_source", "right_source", "method", "confidence"])
    assert len(review) == 2 and all(r[3] == pytest.approx(0.7) for r in review)
    assert unified_accounts(store).set_index("unified_id").loc[uid(store, "salesforce", "001Q"),
                                                               "parent_unified_id"] == uid(store, "salesforce", "001P")


def test_one_stripe_customer_claimed_by_two_crm_accounts_is_reported_not_resolved(store: Store) -> None:
    put(store,
        account("salesforce", "001R", "Hooli", country="US", external_ids={"stripe": "cus_h"}),
        account("salesforce", "001S", "Pied Piper", country="US", external_ids={"stripe": "cus_h"}),
        account("stripe", "cus_h", "Hooli XYZ"))
    result = unify(store)
    assert result.conflict_kinds.get("external_id_shared") == 1
    assert len({uid(store, "salesforce", "001R"), uid(store, "salesforce", "001S"), uid(store, "stripe", "cus_h")}) == 3
    assert result.review == 2  # both claims wait for a decision


# -- overrides ---------------------------------------------------------------------------------------

def test_overrides_win_same_not_same_and_pins(store: Store, tmp_path: Path) -> None:
    put(store, *ACME,
        account("salesforce", "001T", "Totally Different Name", country="FR"),
        account("hubspot", "h11", "Another One", country="FR"),
        account("hubspot", "h12", "Yet Another", country="FR"))
    unify(store)
    acme, other = uid(store, "salesforce", "001A"), uid(store, "hubspot", "h12")
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("source,source_id,unified_id,relation,other_source,other_source_id\n"
                         "salesforce,001T,,same,hubspot,h11\n"
                         "zendesk,z1,,not_same,salesforce,001A\n"
                         f"stripe,cus_1,{other},,,\n"
                         "salesforce,001T,u_pinnedbyhand,,,\n")
    result = unify(store, Identity(overrides_file=overrides))
    # same: linked despite nothing in common; pinned to a new id by hand, the pair takes it
    assert uid(store, "salesforce", "001T") == uid(store, "hubspot", "h11") == "u_pinnedbyhand"
    assert link(store, "hubspot", "h11")["status"] == "override"
    # not same: split from Acme although the domain says otherwise
    assert uid(store, "zendesk", "z1") != uid(store, "salesforce", "001A")
    # pinned to an existing account: joins it, whatever its own evidence says
    assert uid(store, "stripe", "cus_1") == uid(store, "hubspot", "h12") == other
    assert link(store, "stripe", "cus_1")["status"] == "override"
    assert uid(store, "salesforce", "001A") == uid(store, "hubspot", "h1") == acme  # the rest keeps its id
    assert result.conflict_kinds == {}
    # an override naming a record the store does not hold is reported
    overrides.write_text("source,source_id,unified_id\nstripe,cus_missing,u_x\n")
    assert unify(store, Identity(overrides_file=overrides)).conflict_kinds == {"override_unknown_record": 1}


def test_contradicting_overrides_are_reported_and_not_same_wins(store: Store, tmp_path: Path) -> None:
    put(store, *ACME)
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("source,source_id,relation,other_source,other_source_id\n"
                         "hubspot,h1,same,salesforce,001A\n"
                         "salesforce,001A,not_same,hubspot,h1\n")
    result = unify(store, Identity(overrides_file=overrides))
    assert result.conflict_kinds == {"override_contradiction": 1}
    assert uid(store, "hubspot", "h1") != uid(store, "salesforce", "001A")


def test_review_decisions_become_overrides(store: Store) -> None:
    put(store,
        account("salesforce", "001H", "Initech Systems", country="US"),
        account("hubspot", "h8", "Intiech Systems", country="US"),
        account("salesforce", "001J", "Penetrode Systems", country="US"),
        account("hubspot", "h12", "Penetrode Sytsems", country="US"))
    assert unify(store).review == 2
    save_decisions(store, [(("salesforce", "001H"), ("hubspot", "h8"), "same"),
                           (("salesforce", "001J"), ("hubspot", "h12"), "not_same")])
    result = ensure_unified(store)  # decisions changed the marker: it runs
    assert result.ran and result.review == 0
    assert uid(store, "salesforce", "001H") == uid(store, "hubspot", "h8")
    assert uid(store, "salesforce", "001J") != uid(store, "hubspot", "h12")


# -- stable ids, merges and splits -----------------------------------------------------------------------

def test_a_repeated_run_changes_no_id_and_writes_nothing(store: Store) -> None:
    put(store, *ACME, account("salesforce", "001T", "Other Co", country="FR"))
    first = unify(store)
    before = account_map(store)
    again = unify(store)
    assert account_map(store) == before
    assert again.written == 0 and again.events == {}
    assert first.events == {"new": 2}
    skipped = ensure_unified(store)
    assert not skipped.ran and skipped.unified == 2


def test_a_new_record_joins_without_changing_any_id(store: Store) -> None:
    put(store, *ACME, account("salesforce", "001T", "Other Co", country="FR"))
    unify(store)
    before = account_map(store)
    put(store, account("usage", "ws_1", "acme", domain="acme.com", external_ids={"stripe": "cus_1"}), run=2)
    result = ensure_unified(store)
    assert result.ran
    after = account_map(store)
    assert {k: v for k, v in after.items() if k in before} == before
    assert after[("usage", "ws_1")] == before[("salesforce", "001A")]
    assert result.events == {}  # joining an account is not an event
    # a record of a new company gets a new id; the others stay
    put(store, account("hubspot", "h99", "Brand New Ltd", country="GB"), run=3)
    result = ensure_unified(store)
    assert {k: v for k, v in account_map(store).items() if k in before} == before
    assert result.events == {"new": 1}


def test_two_accounts_merging_keep_the_older_id_and_record_it(store: Store) -> None:
    put(store, account("salesforce", "001U", "Stark Industries", domain="stark.example", country="US"))
    unify(store, now=T0)
    older = uid(store, "salesforce", "001U")
    put(store, account("hubspot", "h20", "Stark Ind", country="US"),
        account("hubspot", "h21", "Stark Ind Holdings", country="US", parent_id=None), run=2)
    unify(store, now=T0 + timedelta(days=1))
    newer = uid(store, "hubspot", "h20")
    assert newer != older
    # an external id now ties the two together
    put(store, account("hubspot", "h20", "Stark Ind", country="US", at=T0 + timedelta(hours=1),
                       external_ids={"salesforce": "001U"}), run=3)
    result = unify(store, now=T0 + timedelta(days=2))
    assert uid(store, "hubspot", "h20") == uid(store, "salesforce", "001U") == older
    assert result.events == {"merge": 1}
    assert ("merge", older, newer) in events(store)
    assert redirects(store) == {newer: older}
    gone = unified_accounts(store, live_only=False).set_index("unified_id").loc[newer]
    assert gone["status"] == "merged" and gone["redirect_to"] == older


def test_a_split_keeps_the_id_for_the_larger_part(store: Store) -> None:
    put(store, *ACME)
    unify(store)
    acme = uid(store, "salesforce", "001A")
    # Zendesk's organization moves to another domain and name: it leaves the account
    put(store, account("zendesk", "z1", "Wayne Enterprises", at=T0 + timedelta(hours=1),
                       domain_names=["wayne.example"]), run=2)
    result = unify(store)
    assert uid(store, "salesforce", "001A") == acme and uid(store, "zendesk", "z1") != acme
    assert result.events == {"split": 1}
    assert ("split", uid(store, "zendesk", "z1"), acme) in events(store)


def test_deleted_records_are_not_matched_and_their_links_dropped(store: Store) -> None:
    put(store, *ACME)
    unify(store)
    acme = uid(store, "salesforce", "001A")
    put(store, account("hubspot", "h1", "ACME", at=T0 + timedelta(hours=1), deleted=True, domain="acme.com"), run=2)
    result = unify(store)
    assert ("hubspot", "h1") not in account_map(store)
    assert uid(store, "salesforce", "001A") == acme
    assert result.events == {"unlink": 1}
    assert ("unlink", acme, None) in events(store)
    # every record of an account deleted: its id is retired
    put(store, *[account(s, i, at=T0 + timedelta(hours=2), deleted=True) for s, i in
                 [("salesforce", "001A"), ("zendesk", "z1"), ("stripe", "cus_1")]], run=3)
    result = unify(store)
    assert account_map(store) == {} and result.events == {"retire": 1, "unlink": 3}
    assert unified_accounts(store, live_only=False).set_index("unified_id").loc[acme, "status"] == "retired"


# -- people and hierarchy -------------------------------------------------------------------------------

def test_people_are_linked_by_account_then_email_then_domain(store: Store) -> None:
    put(store, *ACME,
        contact("salesforce", "003x", "wile@acme.com", "001A"),
        contact("hubspot", "c1", "wile@acme.com", None),
        contact("zendesk", "u1", "road.runner@acme.com", None),
        contact("zendesk", "u2", "someone@gmail.com", None),
        contact("zendesk", "u3", "gone@acme.com", "z404"))
    result = unify(store)
    acme = uid(store, "salesforce", "001A")
    people = people_map(store)
    assert people[("salesforce", "003x")] == people[("hubspot", "c1")] == people[("zendesk", "u1")] == acme
    assert ("zendesk", "u2") not in people
    methods = {(s, i): m for s, i, m in store.read_identity("identity_people", ["source", "source_id", "method"])}
    assert methods[("salesforce", "003x")] == "account_ref" and methods[("hubspot", "c1")] == "email"
    assert methods[("zendesk", "u1")] == "email_domain" and methods[("zendesk", "u2")] == "unmatched"
    assert result.people == 5 and result.people_linked == 4
    assert email_map(store)["wile@acme.com"] == acme


def test_parent_ids_roll_up_and_a_child_never_merges_into_its_parent(store: Store) -> None:
    put(store,
        account("salesforce", "001P", "Massive Dynamic", domain="massive.example", country="US"),
        account("salesforce", "001C", "Massive Dynamic", domain="massive.example", country="US", parent_id="001P"),
        account("hubspot", "h30", "Massive Dynamic", domain="massive.example", country="US"))
    unify(store)
    parent, child = uid(store, "salesforce", "001P"), uid(store, "salesforce", "001C")
    assert parent != child
    frame = unified_accounts(store).set_index("unified_id")
    assert frame.loc[child, "parent_unified_id"] == parent and frame.loc[parent, "parent_unified_id"] is None
