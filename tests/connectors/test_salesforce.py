"""The Salesforce connector: unit tests with `responses` (SOQL built, errors classified, cursor
edge cases) and integration tests against the sandbox's Salesforce emulator (standard checks,
incremental runs with deletions, faults, auth, budget, and calls against the floor)."""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from simple_salesforce.exceptions import (SalesforceAuthenticationFailed, SalesforceExpiredSession,
                                          SalesforceGeneralError, SalesforceMalformedRequest,
                                          SalesforceRefusedRequest, SalesforceResourceNotFound)

from retention_hub.config.models import SalesforceSource
from retention_hub.connectors.http import AuthError, BudgetExhausted, Policy, RequestError, TransientError
from retention_hub.connectors.records import Page
from retention_hub.connectors.salesforce import (SPECS, SalesforceConnector, amount_minor, build_soql, domain_of,
                                                 priority_of)
from retention_hub.sandbox import server
from retention_hub.sandbox.records import parse_time
from retention_hub.sandbox.world import World

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
FAST = Policy(backoff_initial=0.01, backoff_max=0.05, max_attempts=10, rate_per_second=1000, burst=1000)
KIND_OF = {s.sobject: s.kind for s in SPECS.values()}
STREAM_OF = {s.sobject: s.stream for s in SPECS.values()}


# -- helpers -----------------------------------------------------------------------------------

def build_world(accounts: int = 30, stripe_field: bool = True) -> World:
    """Users, accounts (one an hour back in time), and a few related records of every kind."""
    w = World(seed=1, anchor=ANCHOR)
    if stripe_field:
        w.sf_custom_fields["Account"]["Stripe_Customer_Id__c"] = {
            "name": "Stripe_Customer_Id__c", "label": "Stripe Customer Id", "type": "string", "length": 255,
            "custom": True}
    old = ANCHOR - timedelta(days=900)
    csm = w.sf_put("User", {"Username": "ana@example.com", "FirstName": "Ana", "LastName": "Lopez",
                            "Name": "Ana Lopez", "Email": "Ana@Example.com", "IsActive": True, "Title": "CSM"}, at=old)
    w.sf_put("User", {"Username": "admin@sandbox.example.com", "FirstName": "Sandbox", "LastName": "Admin",
                      "Name": "Sandbox Admin", "Email": "admin@sandbox.example.com", "IsActive": True,
                      "Title": "Admin"}, at=old)
    ids = []
    for i in range(accounts):
        acc = w.sf_put("Account", {
            "Name": f"Acme {i:05d}", "Website": None if i % 7 == 0 else f"https://www.acme{i}.example.com/home",
            "ParentId": ids[0] if ids and i % 10 == 9 else None, "OwnerId": csm["Id"],
            "Industry": "Technology", "BillingCountry": "US", "Type": "Customer", "NumberOfEmployees": 50 * i,
            "AnnualRevenue": float(i * 1000), "Stripe_Customer_Id__c": f"cus_{i}" if i % 4 == 0 else None},
            at=ANCHOR - timedelta(hours=accounts - i))
        ids.append(acc["Id"])
    for i, acc in enumerate(ids[:10]):
        t = ANCHOR - timedelta(days=2, minutes=i)
        contact = w.sf_put("Contact", {"AccountId": acc, "FirstName": "Jo", "LastName": f"Doe{i}",
                                       "Name": f"Jo Doe{i}", "Email": f"JO{i}@acme{i}.example.com", "Title": "CTO",
                                       "Phone": None, "HasOptedOutOfEmail": i == 3, "OwnerId": csm["Id"]}, at=t)
        w.sf_put("Opportunity", {"AccountId": acc, "Name": f"Acme {i} renewal", "Type": "Renewal",
                                 "StageName": "Negotiation/Review", "CloseDate": "2026-12-01",
                                 "Amount": 12000.555 + i, "Probability": 90.0, "IsClosed": False, "IsWon": False,
                                 "OwnerId": csm["Id"]}, at=t)
        w.sf_put("Case", {"AccountId": acc, "ContactId": contact["Id"], "Subject": "Login fails",
                          "Description": "x", "Status": "Escalated" if i == 2 else "New",
                          "Priority": ["High", "Medium", "Low"][i % 3], "Origin": "Email", "IsClosed": False,
                          "IsEscalated": i == 2, "ClosedDate": None, "OwnerId": csm["Id"]}, at=t)
        w.sf_put("Task", {"WhatId": acc, "WhoId": contact["Id"], "OwnerId": csm["Id"], "Subject": "QBR",
                          "Description": None, "Status": "Completed", "Priority": "Normal",
                          "ActivityDate": "2026-10-30", "IsClosed": True, "TaskSubtype": "Call"}, at=t)
    gone = w.sf_put("Contact", {"AccountId": ids[0], "FirstName": "Old", "LastName": "Gone", "Name": "Old Gone",
                                "Email": "old@acme0.example.com", "Title": None, "Phone": None,
                                "HasOptedOutOfEmail": False, "OwnerId": csm["Id"]}, at=ANCHOR - timedelta(days=5))
    w.sf_delete("Contact", gone["Id"], at=ANCHOR - timedelta(days=4))
    return w


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[server.Sandbox]:
    sb = server.start(build_world(), tmp_path, vendors=("salesforce",))
    yield sb
    sb.stop()


def config(sb: server.Sandbox, **overrides: Any) -> SalesforceSource:
    info = sb.info()["salesforce"]
    values: dict[str, Any] = {"instance_url": info["instance_url"], "auth": {"access_token": info["access_token"]},
                              "ca_cert": info["ca_cert"]}
    values.update(overrides)
    return SalesforceSource(**values)


def connector(sb: server.Sandbox, page_size: int = 2000, **overrides: Any) -> SalesforceConnector:
    return SalesforceConnector(config(sb, **overrides), policy=FAST, page_size=page_size)


def read_all(conn: SalesforceConnector, cursors: dict[str, str | None], until: datetime,
             streams: list[str] | None = None) -> dict[str, list[dict]]:
    """One run: every stream from its cursor; cursors are updated page by page, as the engine does."""
    out: dict[str, list[dict]] = {}
    for stream in streams or conn.streams():
        out[stream] = []
        for page in conn.read(stream, cursors.get(stream), until):
            out[stream] += page.records
            if page.cursor is not None:
                cursors[stream] = page.cursor
    return out


def live(world: World, sobject: str, until: datetime | None = None) -> set[str]:
    """Ids of the live records (stamped no later than `until`, when given)."""
    return {i for i, r in world.salesforce[sobject].items() if not r.get("IsDeleted")
            and (until is None or parse_time(r["SystemModstamp"]) <= until.replace(microsecond=0))}


def query_calls(sb: server.Sandbox) -> int:
    return sum(r["count"] for r in sb.emulators["salesforce"].stats()["requests"] if "/query" in r["path"])


def stamp_of(cursor: str | None) -> datetime | None:
    return parse_time(json.loads(cursor)["stamp"]) if cursor and json.loads(cursor)["stamp"] else None


# -- pure functions ----------------------------------------------------------------------------

def test_build_soql_is_inclusive_bounded_and_ordered() -> None:
    since = datetime(2026, 10, 1, 12, 0, 5, 700000, tzinfo=timezone.utc)
    until = datetime(2026, 11, 1, 9, 30, 59, 999000, tzinfo=timezone.utc)
    assert build_soql("Account", ["Id", "SystemModstamp", "Name"], since, until) == (
        "SELECT Id, SystemModstamp, Name FROM Account WHERE SystemModstamp >= 2026-10-01T12:00:05Z AND "
        "SystemModstamp <= 2026-11-01T09:30:59Z ORDER BY SystemModstamp ASC, Id ASC")
    assert "SystemModstamp >=" not in build_soql("Account", ["Id"], None, until)


def test_value_helpers() -> None:
    assert domain_of("https://www.Acme.com/home") == "acme.com"
    assert domain_of("www.acme.io/") == "acme.io"
    assert domain_of("acme.co.uk") == "acme.co.uk"
    assert domain_of("not a site") is None and domain_of(None) is None
    assert amount_minor(12000.555, "USD") == 1200056  # half up, exact decimal
    assert amount_minor("1500", "JPY") == 1500 and amount_minor(1.2345, "KWD") == 1235
    with pytest.raises(ValueError):
        amount_minor("n/a", "USD")
    assert [priority_of(p) for p in ("High", "Medium", "Low", "Critical", "P1", "weird", None)] == [
        "high", "normal", "low", "urgent", "urgent", None, None]


# -- responses-based unit tests ----------------------------------------------------------------

INSTANCE = "https://acme.my.salesforce.com"
BASE = f"{INSTANCE}/services/data/v59.0"
LIMIT = {"Sforce-Limit-Info": "api-usage=10/100000"}


def describe_body(sobject: str, extra: tuple[str, ...] = ()) -> dict:
    names = ["Id", "IsDeleted", "SystemModstamp", "CreatedDate", *SPECS[STREAM_OF[sobject]].fields, *extra]
    fields = [{"name": n} for n in dict.fromkeys(names)]
    if sobject == "Case":
        fields.append({"name": "ContactId", "relationshipName": "Contact"})
    return {"name": sobject, "fields": fields}


def offline(**overrides: Any) -> SalesforceConnector:
    values: dict[str, Any] = {"instance_url": INSTANCE, "auth": {"access_token": "00D!token"}}
    values.update(overrides)
    page_size = values.pop("page_size", 2000)
    return SalesforceConnector(SalesforceSource(**values), policy=FAST, page_size=page_size)


def soql_of(call: Any) -> str:
    return parse_qs(urlsplit(call.request.url).query)["q"][0]


def opp(rec_id: str, stamp: str, **fields: Any) -> dict:
    row = {"attributes": {"type": "Opportunity"}, "Id": rec_id, "SystemModstamp": stamp, "IsDeleted": False,
           "AccountId": "001A", "Name": "Renewal", "CloseDate": "2026-12-01", "Amount": 100.5,
           "StageName": "Prospecting", "Type": "Renewal", "IsClosed": False, "IsWon": False, "Probability": 10,
           "OwnerId": "005A"}
    row.update(fields)
    return row


@responses.activate
def test_soql_selects_only_needed_fields_and_pages_with_query_then_queryall() -> None:
    responses.get(f"{BASE}/sobjects/Opportunity/describe", json=describe_body("Opportunity", ("Description",)),
                  headers=LIMIT)
    responses.get(f"{BASE}/query/", json={"totalSize": 1, "done": True, "records": [
        opp("006A", "2026-10-31T23:58:00.000+0000")]}, headers=LIMIT)
    responses.get(f"{BASE}/queryAll/", json={"totalSize": 2, "done": True, "records": [
        opp("006A", "2026-10-31T23:58:00.000+0000"), opp("006B", "2026-11-01T00:30:00.000+0000", IsDeleted=True)]},
        headers=LIMIT)
    conn = offline(page_size=500)
    until = datetime(2026, 11, 1, tzinfo=timezone.utc)
    pages = list(conn.read("renewals", None, until))
    first = soql_of(responses.calls[1])
    assert first.startswith("SELECT Id, SystemModstamp, AccountId, Name, CloseDate, Amount, StageName, Type, "
                            "IsClosed, IsWon, Probability, OwnerId, IsDeleted FROM Opportunity WHERE ")
    assert "Description" not in first and "SystemModstamp >=" not in first
    assert "SystemModstamp <= 2026-11-01T00:00:00Z ORDER BY SystemModstamp ASC, Id ASC" in first
    assert responses.calls[1].request.headers["Sforce-Query-Options"] == "batchSize=500"
    rec = pages[0].records[0]["payload"]
    assert rec["amount_minor"] == 10050 and rec["currency"] == "USD" and rec["close_date"] == "2026-12-01"
    # the next run: queryAll (changes and deletions in one pass) from the newest stamp read minus 5 minutes,
    # and no describe
    again = list(conn.read("renewals", pages[-1].cursor, until + timedelta(hours=1)))
    assert urlsplit(responses.calls[2].request.url).path.endswith("/queryAll/")
    assert "SystemModstamp >= 2026-10-31T23:53:00Z AND SystemModstamp <= 2026-11-01T01:00:00Z" in soql_of(
        responses.calls[2])
    got = [r for p in again for r in p.records]
    assert [(r["source_id"], r["deleted"]) for r in got] == [("006B", True)]  # 006A was already emitted
    assert conn.api_calls() == {"describe": 1, "renewals": 2}


@responses.activate
def test_unmappable_rows_are_quarantined_and_the_rest_goes_on() -> None:
    responses.get(f"{BASE}/sobjects/Opportunity/describe", json=describe_body("Opportunity"), headers=LIMIT)
    responses.get(f"{BASE}/query/", json={"totalSize": 4, "done": True, "records": [
        opp("006A", "2026-10-01T10:00:00.000+0000", Amount="lots"),
        opp("006B", "not a time"),
        opp("006C", "2026-10-01T11:00:00.000+0000", CloseDate="31/12/2026"),
        opp("006D", "2026-10-01T12:00:00.000+0000")]}, headers=LIMIT)
    pages = list(offline().read("renewals", None, datetime(2026, 11, 1, tzinfo=timezone.utc)))
    assert [r["source_id"] for p in pages for r in p.records] == ["006D"]
    reasons = {q.source_id: q.reason for p in pages for q in p.quarantined}
    assert set(reasons) == {"006A", "006B", "006C"}
    assert "not a number" in reasons["006A"] and "Opportunity" in reasons["006C"]


@responses.activate
def test_expired_query_locator_requeries_from_the_last_stamp() -> None:
    responses.get(f"{BASE}/sobjects/Opportunity/describe", json=describe_body("Opportunity"), headers=LIMIT)
    responses.get(f"{BASE}/query/", json={"totalSize": 3, "done": False, "nextRecordsUrl":
                                          "/services/data/v59.0/query/01gX-2", "records": [
        opp("006A", "2026-10-01T10:00:00.000+0000"), opp("006B", "2026-10-01T10:00:00.000+0000")]}, headers=LIMIT)
    responses.get(f"{BASE}/query/01gX-2", status=400, json=[{"message": "invalid query locator",
                                                             "errorCode": "INVALID_QUERY_LOCATOR"}])
    responses.get(f"{BASE}/queryAll/", json={"totalSize": 3, "done": True, "records": [
        opp("006A", "2026-10-01T10:00:00.000+0000"), opp("006B", "2026-10-01T10:00:00.000+0000"),
        opp("006C", "2026-10-01T10:00:00.000+0000")]}, headers=LIMIT)
    pages = list(offline().read("renewals", None, datetime(2026, 11, 1, tzinfo=timezone.utc)))
    assert [r["source_id"] for p in pages for r in p.records] == ["006A", "006B", "006C"]
    assert "SystemModstamp >= 2026-10-01T09:55:00Z" in soql_of(responses.calls[-1])


@responses.activate
def test_oauth_token_is_one_auth_call_and_an_expired_session_is_renewed_once() -> None:
    token_url = "https://login.example.com/services/oauth2/token"
    tokens = iter(["first", "second"])
    responses.add_callback(responses.POST, token_url, callback=lambda req: (
        200, {}, json.dumps({"access_token": next(tokens), "instance_url": INSTANCE})))
    responses.get(f"{BASE}/sobjects/Opportunity/describe", json=describe_body("Opportunity"), headers=LIMIT)

    def query(req: requests.PreparedRequest) -> tuple[int, dict, str]:
        if req.headers["Authorization"] == "Bearer first":
            return 401, {}, json.dumps([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        return 200, LIMIT, json.dumps({"totalSize": 1, "done": True,
                                       "records": [opp("006A", "2026-10-01T10:00:00.000+0000")]})
    responses.add_callback(responses.GET, f"{BASE}/query/", callback=query)
    conn = offline(auth={"client_id": "cid", "client_secret": "csecret", "refresh_token": "rt",
                         "token_url": token_url})
    pages = list(conn.read("renewals", None, datetime(2026, 11, 1, tzinfo=timezone.utc)))
    assert [r["source_id"] for p in pages for r in p.records] == ["006A"]
    form = parse_qs(responses.calls[0].request.body)
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["rt"]
    assert conn.api_calls() == {"auth": 2, "describe": 1, "renewals": 2}


@responses.activate
def test_budget_from_sforce_limit_info_stops_the_run_before_the_limit() -> None:
    responses.get(f"{BASE}/sobjects/Opportunity/describe", json=describe_body("Opportunity"),
                  headers={"Sforce-Limit-Info": "api-usage=98/100"})
    conn = offline()
    with pytest.raises(BudgetExhausted, match="salesforce: daily API budget reached"):
        list(conn.read("renewals", None, datetime(2026, 11, 1, tzinfo=timezone.utc)))
    assert len(responses.calls) == 1  # the query was never sent: 98 used + 2 kept in reserve >= 100


def refused(code: str, message: str, status: int = 403) -> Any:
    content = [{"message": message, "errorCode": code}]
    return {400: SalesforceMalformedRequest, 401: SalesforceExpiredSession, 403: SalesforceRefusedRequest,
            404: SalesforceResourceNotFound}.get(status, SalesforceGeneralError)(
        f"{BASE}/query/", status, "query", content)


@pytest.mark.parametrize("exc, cls, words", [
    (refused("INVALID_SESSION_ID", "Session expired or invalid", 401), AuthError, ["access_token"]),
    (SalesforceAuthenticationFailed("invalid_client", "invalid client credentials"), AuthError, ["client_secret"]),
    (SalesforceAuthenticationFailed("invalid_client_id", "client identifier invalid"), AuthError, ["client_id"]),
    (refused("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), BudgetExhausted, ["daily API"]),
    (refused("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."), TransientError, ["throttled"]),
    (refused("INSUFFICIENT_ACCESS", "insufficient access rights on object id"), AuthError, ["permission"]),
    (refused("API_DISABLED_FOR_ORG", "API is not enabled for this Organization or Partner"), AuthError,
     ["API Enabled"]),
    (refused("INVALID_FIELD", "No such column 'Foo' on entity 'Account'", 400), RequestError, ["INVALID_FIELD"]),
    (refused("NOT_FOUND", "The requested resource does not exist", 404), RequestError, ["instance_url"]),
    (refused("SERVER_UNAVAILABLE", "busy", 503), TransientError, ["503"]),
    (refused("UNKNOWN_EXCEPTION", "boom", 500), TransientError, ["500"]),
    (refused("X", "teapot", 418), RequestError, ["418"]),
    (requests.ConnectionError("reset"), TransientError, ["network"]),
    (requests.Timeout("slow"), TransientError, ["network"]),
    (requests.exceptions.SSLError("bad cert"), AuthError, ["ca_cert"]),
])
def test_classify(exc: BaseException, cls: type, words: list[str]) -> None:
    mapped = offline().classify(exc)
    assert type(mapped) is cls
    assert str(mapped).startswith("salesforce: ") and all(w in str(mapped) for w in words), str(mapped)
    assert "00D!token" not in str(mapped)
    assert offline().classify(KeyError("x")) is None  # not ours: a bug surfaces as itself


def test_unknown_object_in_config_is_refused() -> None:
    with pytest.raises(RequestError, match="Lead not supported"):
        offline(objects=["Account", "Lead"])
    assert offline(objects=["account", "Case"]).streams() == ["accounts", "tickets"]


# -- against the sandbox -----------------------------------------------------------------------

def test_full_read_returns_every_stream_with_unique_ids(sandbox: server.Sandbox) -> None:
    w = sandbox.world
    conn = connector(sandbox)
    out = read_all(conn, {}, w.now())
    for sobject, stream in STREAM_OF.items():
        ids = [r["source_id"] for r in out[stream]]
        assert ids and len(ids) == len(set(ids)), stream
        assert set(ids) == live(w, sobject), stream  # the deleted contact is not in a first read
        assert all(r["kind"] == KIND_OF[sobject] and not r["deleted"] for r in out[stream])
    accounts = {r["payload"]["name"]: r["payload"] for r in out["accounts"]}
    assert accounts["Acme 00004"]["external_ids"] == {"stripe": "cus_4"}
    assert accounts["Acme 00001"]["domain"] == "acme1.example.com" and accounts["Acme 00001"]["external_ids"] == {}
    assert accounts["Acme 00029"]["segment"] == "Enterprise" and accounts["Acme 00001"]["segment"] == "SMB"
    tickets = {r["payload"]["priority"] for r in out["tickets"]}
    assert tickets == {"high", "normal", "low"}
    assert any(r["payload"]["escalated"] for r in out["tickets"])
    assert all(r["payload"]["requester_email"].startswith("jo") for r in out["tickets"])  # via Contact.Email
    assert all(r["payload"]["account_id"] for r in out["activities"])
    assert conn.api_calls() == {"describe": 6, **{s: 1 for s in STREAM_OF.values()}}


def test_custom_field_is_selected_only_when_the_org_has_it(tmp_path: Path) -> None:
    sb = server.start(build_world(stripe_field=False), tmp_path, vendors=("salesforce",))
    try:
        out = read_all(connector(sb), {}, sb.world.now(), ["accounts"])
        assert len(out["accounts"]) == 30 and all(r["payload"]["external_ids"] == {} for r in out["accounts"])
    finally:
        sb.stop()


def test_configured_extra_fields_are_pulled_and_unknown_ones_named(sandbox: server.Sandbox) -> None:
    conn = connector(sandbox, fields={"Account": ["AnnualRevenue", "Owner.Email"]})
    out = read_all(conn, {}, sandbox.world.now(), ["accounts"])
    assert out["accounts"][-1]["payload"]["extra"] == {"AnnualRevenue": 29000, "Owner.Email": "Ana@Example.com"}
    bad = connector(sandbox, fields={"Account": ["Helth_Score__c"]})
    with pytest.raises(RequestError, match=r"fields\.Account: Helth_Score__c not found"):
        read_all(bad, {}, sandbox.world.now(), ["accounts"])


def test_pages_past_the_first_page_and_resumes_mid_stream(tmp_path: Path) -> None:
    sb = server.start(build_world(accounts=450), tmp_path, vendors=("salesforce",))
    try:
        until = sb.world.now()
        pages = list(connector(sb, page_size=200).read("accounts", None, until))
        assert [len(p.records) for p in pages[:3]] == [200, 200, 50]
        assert query_calls(sb) == 3  # one query, two nextRecordsUrl pages
        # a crash after page 1 was stored: the next run starts from page 1's cursor and loses nothing
        conn = connector(sb, page_size=200)
        rest = [r["source_id"] for p in conn.read("accounts", pages[0].cursor, until) for r in p.records]
        assert set(rest) | {r["source_id"] for r in pages[0].records} == live(sb.world, "Account")
        assert len(rest) == len(set(rest)) and not set(rest) & {r["source_id"] for r in pages[0].records}
        stamps = [stamp_of(p.cursor) for p in pages]
        assert stamps == sorted(stamps) and stamps[-1] <= until
    finally:
        sb.stop()


def test_incremental_runs_pick_up_exactly_the_changes_and_deletions(sandbox: server.Sandbox) -> None:
    w = sandbox.world
    cursors: dict[str, str | None] = {}
    until1 = w.now()
    read_all(connector(sandbox), cursors, until1)
    first = dict(cursors)

    conn = connector(sandbox)
    calls_before = query_calls(sandbox)
    until2 = w.now()
    again = read_all(conn, cursors, until2)
    assert all(not recs for recs in again.values())
    assert query_calls(sandbox) - calls_before == len(STREAM_OF)  # one query per stream, no describe
    assert "describe" not in conn.api_calls()

    at = until2 + timedelta(seconds=10)  # clear of until2's second, which the next read floors to
    with w.lock:
        acc = next(iter(w.salesforce["Account"]))
        w.sf_put("Account", {"Id": acc, "Name": "Acme renamed"}, at=at)
        contact = next(i for i, r in w.salesforce["Contact"].items() if not r["IsDeleted"])
        w.sf_delete("Contact", contact, at=at)
        case = w.sf_put("Case", {"AccountId": acc, "Subject": "New one", "Status": "New", "Priority": "High",
                                 "IsClosed": False, "IsEscalated": False}, at=at + timedelta(seconds=1))
    out = read_all(connector(sandbox), cursors, at + timedelta(minutes=1))
    got = {(s, r["source_id"], r["deleted"]) for s, recs in out.items() for r in recs}
    assert got == {("accounts", acc, False), ("contacts", contact, True), ("tickets", case["Id"], False)}
    assert next(r for r in out["accounts"])["payload"]["name"] == "Acme renamed"
    for stream, cursor in cursors.items():  # cursors never go backwards
        before, after = stamp_of(first[stream]), stamp_of(cursor)
        assert before is None or after >= before
    # and a run after that yields nothing
    assert not any(read_all(connector(sandbox), cursors, at + timedelta(minutes=2)).values())


def test_survives_throttling_and_server_errors(sandbox: server.Sandbox) -> None:
    w = sandbox.world
    clean = read_all(connector(sandbox), {}, w.now())
    sandbox.emulators["salesforce"].knobs.update({"error_rate": 0.3, "throttle_rate": 0.2, "seed": 3})
    conn = connector(sandbox, page_size=200)
    noisy = read_all(conn, {}, w.now())
    assert {s: sorted(r["source_id"] for r in recs) for s, recs in noisy.items()} == {
        s: sorted(r["source_id"] for r in recs) for s, recs in clean.items()}
    statuses = {r["status"] for r in sandbox.emulators["salesforce"].stats()["requests"]}
    assert 403 in statuses and statuses & {500, 502, 503}
    assert sum(conn.caller.retries.values()) > 0


def test_bad_token_stops_with_a_clear_auth_error(sandbox: server.Sandbox) -> None:
    conn = connector(sandbox, auth={"access_token": "00Dxx!wrong"})
    with pytest.raises(AuthError, match=r"^salesforce: the session was refused \(INVALID_SESSION_ID.*access_token"):
        list(conn.read("accounts", None, sandbox.world.now()))
    assert sum(conn.api_calls().values()) == 1  # no retries on a bad credential


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token", "password"])
def test_oauth_grants_against_the_sandbox(sandbox: server.Sandbox, grant: str) -> None:
    info = sandbox.info()["salesforce"]
    auth = {"client_id": info["client_id"], "client_secret": info["client_secret"], "token_url": info["token_url"],
            "grant": grant}
    if grant == "refresh_token":
        auth["refresh_token"] = info["refresh_token"]
    if grant == "password":
        auth.update(username=info["username"], password=info["password"])
    conn = connector(sandbox, auth=auth)
    assert len(read_all(conn, {}, sandbox.world.now(), ["users"])["users"]) == 2
    assert conn.api_calls() == {"auth": 1, "describe": 1, "users": 1}


def test_wrong_client_secret_names_what_to_fix(sandbox: server.Sandbox) -> None:
    info = sandbox.info()["salesforce"]
    conn = connector(sandbox, auth={"client_id": info["client_id"], "client_secret": "nope",
                                    "token_url": info["token_url"]})
    with pytest.raises(AuthError, match=r"salesforce: the OAuth token request was refused \(invalid_client.*"
                                        r"sources\.salesforce\.auth\.client_secret") as err:
        list(conn.read("users", None, sandbox.world.now()))
    assert "nope" not in str(err.value)


def test_org_daily_limit_stops_the_run_cleanly(sandbox: server.Sandbox) -> None:
    emulator = sandbox.emulators["salesforce"]
    emulator.daily_api_limit, emulator.api_used = 1000, 970
    conn = connector(sandbox)
    cursors: dict[str, str | None] = {}
    with pytest.raises(BudgetExhausted, match="salesforce: daily API budget reached"):
        read_all(conn, cursors, sandbox.world.now())
    # it stopped short of the org's limit (20 calls kept in reserve), with the finished streams' cursors saved
    assert emulator.api_used < 1000 and cursors
    assert all(r["status"] != 403 for r in emulator.stats()["requests"])


# -- a generated world: the floor and a day of changes -----------------------------------------

def test_generated_world_calls_at_the_floor_and_one_day_of_changes(tmp_path: Path) -> None:
    from retention_hub.sandbox.generator import generate_world

    w = generate_world(2000, 5, tmp_path, anchor=ANCHOR)
    sb = server.start(w, tmp_path, vendors=("salesforce",))
    try:
        conn = connector(sb)
        cursors: dict[str, str | None] = {}
        until1 = w.now()
        out = read_all(conn, cursors, until1)
        calls = conn.api_calls()
        floor = {s: max(1, math.ceil(len(recs) / 2000)) for s, recs in out.items()}
        print("\nsalesforce, 2,000 customers: records / calls / floor per stream")
        for stream, recs in out.items():
            print(f"  {stream:<11} {len(recs):>6} {calls[stream]:>4} {floor[stream]:>4}")
        total_floor = sum(floor.values()) + calls["describe"]
        print(f"  describe calls {calls['describe']}; total {sum(calls.values())} calls, floor {total_floor}")
        assert {s: calls[s] for s in floor} == floor
        assert sum(calls.values()) <= 1.1 * total_floor
        for sobject, stream in STREAM_OF.items():  # (the generator leaves a few records stamped in the future)
            assert {r["source_id"] for r in out[stream]} == live(w, sobject, until1)

        conn2 = connector(sb)
        assert not any(read_all(conn2, cursors, w.now()).values())
        assert all(n <= 2 for n in conn2.api_calls().values())

        w.advance(1)
        until3 = w.now()
        low, high = until1.replace(microsecond=0), until3.replace(microsecond=0)
        with w.lock:
            expected = {(STREAM_OF[o], i, bool(r["IsDeleted"])) for o in STREAM_OF
                        for i, r in w.salesforce[o].items() if low < parse_time(r["SystemModstamp"]) <= high}
        changed = read_all(connector(sb), cursors, until3)
        got = {(s, r["source_id"], r["deleted"]) for s, recs in changed.items() for r in recs}
        print(f"  after one day: {len(got)} changed records, {sum(d for *_, d in got)} deletions")
        assert expected and got == expected
    finally:
        sb.stop()


def test_look_back_catches_a_row_committed_late_with_an_earlier_stamp(sandbox: server.Sandbox) -> None:
    """A transaction stamps SystemModstamp when it starts: a row can become visible after a query
    that already saw newer rows. The 5-minute look-back re-reads that window; seen rows are skipped."""
    w = sandbox.world
    cursors: dict[str, str | None] = {}
    now = w.now()
    case = {"Subject": "x", "Status": "New", "Priority": "Low", "IsClosed": False, "IsEscalated": False}
    with w.lock:
        w.sf_put("Case", case, at=now)
    read_all(connector(sandbox), cursors, now + timedelta(minutes=1), ["tickets"])
    assert stamp_of(cursors["tickets"]) == now.replace(microsecond=now.microsecond // 1000 * 1000)
    with w.lock:  # committed after that read, stamped 3 minutes before the newest row it saw
        late = w.sf_put("Case", case, at=now - timedelta(minutes=3))
    out = read_all(connector(sandbox), cursors, now + timedelta(minutes=2), ["tickets"])
    assert [r["source_id"] for r in out["tickets"]] == [late["Id"]]


def test_a_client_clock_ahead_of_the_org_loses_nothing(sandbox: server.Sandbox) -> None:
    """The resume point is the newest stamp Salesforce wrote, never the client's `until`."""
    w = sandbox.world
    cursors: dict[str, str | None] = {}
    ahead = w.now() + timedelta(days=20)  # e.g. the engine's wall clock against an org (or sandbox) behind it
    read_all(connector(sandbox), cursors, ahead, ["accounts"])
    with w.lock:
        acc = w.sf_put("Account", {"Name": "Created after the run"}, at=w.now() + timedelta(minutes=1))
    out = read_all(connector(sandbox), cursors, ahead + timedelta(hours=1), ["accounts"])
    assert [r["source_id"] for r in out["accounts"]] == [acc["Id"]]
