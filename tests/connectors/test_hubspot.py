"""The HubSpot connector against the sandbox's HubSpot emulator (the SDK uses urllib3: no `responses`).

Standard checks (records for every stream, unique keys, cursor monotonic, pages past page 1, a 429
and a 5xx survived, a 401 stops with a clear message, a quiet second run costs at most 2 calls per
stream, after `world.advance` exactly the changed records come back) plus HubSpot's own traps:
search's 10,000-result window, shared modification times, records modified while we page.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import urllib3
from hubspot.crm.associations.v4 import ApiException as AssocApiException
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.objects.tasks import ApiException as TasksApiException
from hubspot.crm.owners import ApiException as OwnersApiException

from retention_hub.config.models import HubSpotSource
from retention_hub.connectors.http import AuthError, BudgetExhausted, Policy, RequestError, TransientError
from retention_hub.connectors import hubspot
from retention_hub.connectors.hubspot import HubSpotConnector, classify, to_ms
from retention_hub.connectors.records import Quarantined
from retention_hub.sandbox import server
from retention_hub.sandbox.generator import generate_world
from retention_hub.sandbox.records import hs_time
from retention_hub.sandbox.world import World, hubspot_date_value

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
FAST = Policy(timeout=10, max_attempts=8, backoff_initial=0.001, backoff_max=0.01, rate_per_second=1000, burst=1000)
OBJECTS = {"companies": "companies", "contacts": "contacts", "deals": "deals", "tickets": "tickets", "tasks": "tasks"}
LIST_PATH = "/crm/v3/objects/{type_name}"
SEARCH_PATH = "/crm/v3/objects/{type_name}/search"
ASSOC_PATH = "/crm/v4/associations/{from_name}/{to_name}/batch/read"


# -- helpers ------------------------------------------------------------------------------------
def make(sb: server.Sandbox, token: str | None = None, policy: Policy = FAST, **kwargs: Any) -> HubSpotConnector:
    cfg = HubSpotSource(base_url=sb.urls["hubspot"], access_token=token or sb.credentials["hubspot"]["access_token"])
    kwargs.setdefault("search_rate", 1000)
    return HubSpotConnector(cfg, policy, **kwargs)


def run(conn: HubSpotConnector, stream: str, cursor: str | None, until: datetime,
        full_refresh: bool = False) -> tuple[list[dict], str | None, list[Quarantined]]:
    records, bad = [], []
    for page in conn.read(stream, cursor, until, full_refresh=full_refresh):
        records += page.records
        bad += page.quarantined
        cursor = page.cursor or cursor
    return records, cursor, bad


def stats(sb: server.Sandbox) -> Counter[tuple[str, int]]:
    out: Counter[tuple[str, int]] = Counter()
    for row in sb.emulators["hubspot"].stats()["requests"]:
        out[(row["path"], row["status"])] += row["count"]
    return out


def reset_stats(sb: server.Sandbox) -> None:
    with sb.emulators["hubspot"]._stats_lock:
        sb.emulators["hubspot"]._stats.clear()


def live_ids(world: World, stream: str) -> set[str]:
    if stream == "owners":
        return {str(o["id"]) for o in world.hs_owners.values() if not o.get("archived")}
    return {i for i, r in world.hubspot[stream].items() if not r.get("archived")}


def changes(world: World, stream: str, lo: datetime, hi: datetime) -> set[tuple[str, bool]]:
    """(id, deleted) of records the world changed in (lo, hi]: modified live ones and archived ones."""
    lo_ms, hi_ms, out = to_ms(lo), to_ms(hi), set()
    if stream == "owners":
        return {(str(o["id"]), bool(o.get("archived"))) for o in world.hs_owners.values()
                if lo_ms < to_ms(o["updatedAt"]) <= hi_ms}
    for rec_id, rec in world.hubspot[stream].items():
        if rec.get("archived"):
            if lo_ms < to_ms(rec["archivedAt"]) <= hi_ms:
                out.add((rec_id, True))
        elif lo_ms < to_ms(rec["properties"]["hs_lastmodifieddate"]) <= hi_ms:
            out.add((rec_id, False))
    return out


def mod_of(cursor: str | None) -> int:
    return json.loads(cursor)["mod"] if cursor else -1


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.Sandbox]:
    """A generated world of 300 customers; tests that change it restore it (knobs) or use their own."""
    directory = tmp_path_factory.mktemp("hs_gen")
    world = generate_world(300, 5, directory, anchor=ANCHOR)
    sb = server.start(world, directory, vendors=("hubspot",))
    yield sb
    sb.stop()


def small_world() -> World:
    """A hand-made portal: a parent and a child company, contacts, deals, a ticket and a task."""
    w = World(seed=1, anchor=ANCHOR)
    t = ANCHOR - timedelta(days=30)
    w.hs_owners["101"] = {"id": "101", "email": "csm@sandbox.example.com", "firstName": "Casey", "lastName": "Smith",
                          "userId": 9001, "createdAt": hs_time(t), "updatedAt": hs_time(t), "archived": False}
    parent = w.hs_put("companies", {"name": "Parent Co", "domain": "parent.example.com",
                                    "hubspot_owner_id": "101", "salesforceaccountid": "001000000000001AAA"}, at=t)
    child = w.hs_put("companies", {"name": "Child Co", "website": "https://www.child.example.com/about",
                                   "country": "DE", "industry": "RETAIL"}, at=t)
    w.hs_associate("companies", parent["id"], "companies", child["id"], 13, 14)
    contact = w.hs_put("contacts", {"email": "ann@child.example.com", "firstname": "Ann", "lastname": "Lee",
                                    "jobtitle": "CTO", "hs_email_optout": "true"}, at=t)
    w.hs_associate("contacts", contact["id"], "companies", parent["id"])
    w.hs_associate("contacts", contact["id"], "companies", child["id"], 1, 2)  # the primary company
    deal = w.hs_put("deals", {"dealname": "Renewal", "amount": "1234.565", "dealstage": "closedwon",
                              "dealtype": "existingbusiness", "closedate": hubspot_date_value(ANCHOR)}, at=t)
    w.hs_associate("deals", deal["id"], "companies", child["id"])
    w.hs_put("deals", {"dealname": "Broken", "amount": "twelve", "dealstage": "qualifiedtobuy"}, at=t)
    ticket = w.hs_put("tickets", {"subject": "Down", "hs_pipeline": "0", "hs_pipeline_stage": "4",
                                  "hs_ticket_priority": "URGENT", "closed_date": hs_time(t)}, at=t)
    w.hs_associate("tickets", ticket["id"], "companies", child["id"])
    task = w.hs_put("tasks", {"hs_task_subject": "QBR", "hs_task_status": "COMPLETED", "hs_task_type": "CALL",
                              "hs_timestamp": hs_time(t), "hubspot_owner_id": "101"}, at=t)
    w.hs_associate("tasks", task["id"], "companies", parent["id"])
    return w


@pytest.fixture
def small(tmp_path: Path) -> Iterator[server.Sandbox]:
    sb = server.start(small_world(), tmp_path, vendors=("hubspot",))
    yield sb
    sb.stop()


def contacts_world(n: int, at: datetime, step_ms: int = 1, base: datetime | None = None) -> World:
    """`n` contacts written straight into the world (cheap), modified at `at` + i * step_ms."""
    w = World(seed=2, anchor=base or ANCHOR)
    table = w.hubspot["contacts"]
    for i in range(n):
        rec_id = str(2_000_000_000 + i)
        stamp = hs_time(at + timedelta(milliseconds=i * step_ms))
        table[rec_id] = {"id": rec_id, "createdAt": stamp, "updatedAt": stamp, "archived": False,
                         "properties": {"hs_object_id": rec_id, "createdate": stamp, "hs_lastmodifieddate": stamp,
                                        "email": f"p{i}@bulk.example.com", "firstname": f"P{i}"}}
    return w


def cursor_at(when: datetime) -> str:
    ms = to_ms(when)
    return json.dumps({"v": 1, "mod": ms, "arch": ms, "seen": {}})


# -- standard checks on a generated world --------------------------------------------------------
def test_full_read_returns_every_record_at_the_floor(gen: server.Sandbox) -> None:
    conn, until = make(gen), gen.world.now()
    reset_stats(gen)
    print("\nstream      records  calls  floor(list)  +assoc batches")
    for stream in conn.streams():
        records, cursor, bad = run(conn, stream, None, until)
        ids = [r["source_id"] for r in records]
        assert records and not bad, stream
        assert len(ids) == len(set(ids)), f"{stream}: duplicate source_id"
        assert set(ids) == live_ids(gen.world, stream), stream
        assert not any(r["deleted"] for r in records)
        assert mod_of(cursor) == to_ms(until)
        limit = 500 if stream == "owners" else 100
        floor = math.ceil(len(ids) / limit)
        assoc = 0 if stream == "owners" else math.ceil(len(ids) / 1000)
        count = 0 if stream == "owners" else 1  # the live count that lets later runs skip the archived list
        print(f"{stream:10} {len(ids):8} {conn.api_calls()[stream]:6} {floor:12} {assoc:15}")
        assert conn.api_calls()[stream] == floor + assoc + count, stream
    assert stats(gen)[(LIST_PATH, 200)] > 5  # contacts alone need several list pages: paging works
    assert not [k for k in stats(gen) if k[1] >= 400]


def test_records_carry_links_from_batched_associations(gen: server.Sandbox) -> None:
    conn, until, w = make(gen), gen.world.now(), gen.world
    companies = {r["source_id"]: r["payload"] for r in run(conn, "companies", None, until)[0]}
    with_parent = {i for i in companies if any(14 in t for t in w.hs_associations("companies", i, "companies").values())}
    assert with_parent and {i for i, p in companies.items() if p["parent_id"]} == with_parent
    for stream in ("contacts", "deals", "tickets", "tasks"):
        for rec in run(conn, stream, None, until)[0]:
            linked = sorted(w.hs_associations(stream, rec["source_id"], "companies"), key=int)
            assert rec["payload"]["account_id"] == (linked[0] if linked else None)
            assert rec["payload"]["account_id"] in companies
    assert not [k for k in stats(gen) if k[1] >= 400]


def test_second_run_with_nothing_changed_is_cheap_and_empty(gen: server.Sandbox) -> None:
    conn = make(gen)
    first = {s: run(conn, s, None, gen.world.now()) for s in conn.streams()}
    before = dict(conn.api_calls())
    for stream in conn.streams():
        records, cursor, _ = run(conn, stream, first[stream][1], gen.world.now())
        assert records == [], stream
        assert conn.api_calls()[stream] - before[stream] <= 2, stream
        assert mod_of(cursor) >= mod_of(first[stream][1])  # the cursor never goes backwards


def test_survives_429_and_5xx(gen: server.Sandbox) -> None:
    until = gen.world.now()
    clean = {s: sorted(r["source_id"] for r in run(make(gen), s, None, until)[0]) for s in ("companies", "contacts")}
    knobs = gen.emulators["hubspot"].knobs
    for fault in ("throttle_rate", "error_rate"):
        reset_stats(gen)
        setattr(knobs, fault, 0.4)
        try:
            conn = make(gen)
            for stream in ("companies", "contacts"):
                assert sorted(r["source_id"] for r in run(conn, stream, None, until)[0]) == clean[stream]
        finally:
            setattr(knobs, fault, 0.0)
        assert sum(conn.caller.retries.values()) > 0
        codes = {status for _, status in stats(gen)}
        assert codes & ({429} if fault == "throttle_rate" else {500, 502, 503}), fault


def test_401_stops_with_a_clear_error(gen: server.Sandbox) -> None:
    conn = make(gen, token="pat-na1-wrong")
    with pytest.raises(AuthError) as err:
        run(conn, "contacts", None, gen.world.now())
    assert err.value.source == "hubspot" and "access_token" in str(err.value)
    assert "pat-na1-wrong" not in str(err.value)
    assert conn.api_calls()["contacts"] == 1  # not retried


def test_after_advance_exactly_the_changed_records(tmp_path: Path) -> None:
    world = generate_world(300, 6, tmp_path, anchor=ANCHOR)
    sb = server.start(world, tmp_path, vendors=("hubspot",))
    try:
        conn = make(sb)
        until = world.now()
        cursors = {s: run(conn, s, None, until)[1] for s in conn.streams()}
        seen_changes = 0
        for days in (1, 6):
            world.advance(days)
            previous, until = until, world.now()
            for stream in conn.streams():
                records, cursor, bad = run(conn, stream, cursors[stream], until)
                got = {(r["source_id"], r["deleted"]) for r in records}
                assert len(got) == len(records) and not bad, stream
                assert got == changes(world, stream, previous, until), (stream, days)
                assert mod_of(cursor) >= mod_of(cursors[stream])
                cursors[stream] = cursor
                seen_changes += len(got)
        assert seen_changes > 0
    finally:
        sb.stop()


# -- mapping --------------------------------------------------------------------------------------
def test_canonical_fields_and_quarantine(small: server.Sandbox) -> None:
    conn, until = make(small), small.world.now()
    out = {s: run(conn, s, None, until) for s in conn.streams()}
    accounts = {r["payload"]["name"]: r["payload"] for r in out["companies"][0]}
    parent, child = accounts["Parent Co"], accounts["Child Co"]
    assert child["parent_id"] == parent["source_id"] and parent["parent_id"] is None
    assert parent["external_ids"] == {"salesforce": "001000000000001AAA"} and parent["owner_id"] == "101"
    assert child["domain"] is None and child["website"] == "https://www.child.example.com/about"
    [contact] = [r["payload"] for r in out["contacts"][0]]
    assert contact["account_id"] == child["source_id"]  # the "Primary" label wins over the lower id
    assert (contact["name"], contact["title"], contact["opted_out"]) == ("Ann Lee", "CTO", True)
    [deal] = [r["payload"] for r in out["deals"][0]]
    assert (deal["amount_minor"], deal["currency"], deal["is_closed"], deal["is_won"]) == (123457, "USD", True, True)
    assert deal["close_date"] == "2026-11-01" and deal["account_id"] == child["source_id"]
    [bad] = out["deals"][2]
    assert bad.kind == "renewal" and "twelve" in bad.reason
    [ticket] = [r["payload"] for r in out["tickets"][0]]
    assert (ticket["priority"], ticket["status"], ticket["account_id"]) == ("urgent", "closed", child["source_id"])
    [task] = [r["payload"] for r in out["tasks"][0]]
    assert (task["type"], task["completed"], task["owner_id"], task["account_id"]) == ("call", True, "101",
                                                                                        parent["source_id"])
    [owner] = [r["payload"] for r in out["owners"][0]]
    assert (owner["email"], owner["name"]) == ("csm@sandbox.example.com", "Casey Smith")


def test_deletions_on_incremental_and_full_refresh(small: server.Sandbox) -> None:
    w, conn = small.world, make(small)
    _, cursor, _ = run(conn, "contacts", None, w.now())
    [contact_id] = live_ids(w, "contacts")
    with w.lock:
        w.hs_archive("contacts", contact_id)
        w.hs_owners["101"].update(archived=True, updatedAt=hs_time(w.now()))
    records, cursor2, _ = run(conn, "contacts", cursor, w.now())
    assert [(r["source_id"], r["deleted"]) for r in records] == [(contact_id, True)]
    assert run(conn, "contacts", cursor2, w.now())[0] == []  # emitted once
    full = run(conn, "contacts", cursor2, w.now(), full_refresh=True)[0]
    assert [(r["source_id"], r["deleted"]) for r in full] == [(contact_id, True)]
    owners = run(conn, "owners", run(make(small), "owners", cursor, w.now())[1], w.now())[0]
    assert owners == []
    owner_changes = run(conn, "owners", cursor, w.now())[0]
    assert [(r["source_id"], r["deleted"]) for r in owner_changes] == [("101", True)]


# -- search: windows, ties, concurrent changes ---------------------------------------------------
def test_more_than_10000_changed_contacts(tmp_path: Path) -> None:
    """Search answers 400 past 10,000 results per query; keyset pages never get there."""
    changed_from = ANCHOR - timedelta(hours=2)
    w = contacts_world(10_500, changed_from, step_ms=500)  # 10,500 changes over ~1.5 hours
    sb = server.start(w, tmp_path, vendors=("hubspot",))
    try:
        conn = make(sb)
        records, cursor, _ = run(conn, "contacts", cursor_at(changed_from - timedelta(hours=1)), w.now())
        assert mod_of(cursor) > to_ms(changed_from)
        ids = [r["source_id"] for r in records]
        assert len(ids) == len(set(ids)) == 10_500
        st = stats(sb)
        assert not [k for k in st if k[1] >= 400]
        # 50 pages reach the 10,000 cap; the next window starts at the last time read (1 record again)
        # (+1: the live count that decides whether the archived list must be read)
        assert st[(SEARCH_PATH, 200)] == 50 + math.ceil(501 / 200) + 1
        assert st[(ASSOC_PATH, 207)] == math.ceil(10_500 / 1000)  # associations in batches of 1,000 ids
        assert run(conn, "contacts", cursor, w.now())[0] == []
    finally:
        sb.stop()


def test_records_sharing_a_modification_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows end before the result cap; a window of one timestamp is walked by id: none lost or twice."""
    monkeypatch.setattr(hubspot, "SEARCH_WINDOW", 60)  # as if search stopped at 60 results, not 10,000
    at = ANCHOR - timedelta(hours=1)
    w = contacts_world(75, at, step_ms=0)  # 75 contacts modified in the same millisecond
    for i in range(30):
        w.hs_put("contacts", {"email": f"late{i}@x.example.com"}, at=at + timedelta(seconds=1 + i // 7))
    sb = server.start(w, tmp_path, vendors=("hubspot",))
    try:
        conn = make(sb, search_page_size=20, batch_size=40)
        records, cursor, _ = run(conn, "contacts", cursor_at(at - timedelta(minutes=1)), w.now())
        ids = [r["source_id"] for r in records]
        assert len(ids) == len(set(ids)) == 105
        assert not [k for k in stats(sb) if k[1] >= 400]
        assert run(conn, "contacts", cursor, w.now())[0] == []
    finally:
        sb.stop()


def test_record_modified_while_paging_is_not_lost(tmp_path: Path) -> None:
    """Offset paging would skip one record when an earlier one moves to the end; keyset does not."""
    at = ANCHOR - timedelta(hours=1)
    w = contacts_world(100, at, step_ms=1000)
    sb = server.start(w, tmp_path, vendors=("hubspot",))
    try:
        conn = make(sb, search_page_size=10)
        search, calls = conn._search, []

        def search_and_touch(*args: Any, **kwargs: Any) -> Any:
            result = search(*args, **kwargs)
            calls.append(1)
            if len(calls) == 1:  # an already-read record changes after the run's start (through the
                with w.lock:  # emulator, so that its cached result list changes as HubSpot's would)
                    sb.emulators["hubspot"].write("contacts", {"jobtitle": "moved"}, result[0][0]["id"])
            return result

        conn._search = search_and_touch  # type: ignore[method-assign]
        until = w.now()
        records, cursor, _ = run(conn, "contacts", cursor_at(at - timedelta(minutes=1)), until)
        assert len({r["source_id"] for r in records}) == 100
        again = run(make(sb), "contacts", cursor, w.now())[0]
        assert [r["payload"]["title"] for r in again] == ["moved"]
    finally:
        sb.stop()


def test_search_keeps_under_its_own_rate_limit(tmp_path: Path) -> None:
    at = ANCHOR - timedelta(hours=1)
    sb = server.start(contacts_world(60, at, step_ms=1000), tmp_path, vendors=("hubspot",))
    try:
        sb.emulators["hubspot"].knobs.rate_limits = "real"  # 5 searches per second, 429 beyond
        conn = make(sb, search_rate=4.0, search_page_size=5)
        started = time.monotonic()
        records = run(conn, "contacts", cursor_at(at - timedelta(minutes=1)), sb.world.now())[0]
        assert len(records) == 60
        # 12 pages of 5 and the live count
        assert stats(sb)[(SEARCH_PATH, 429)] == 0 and stats(sb)[(SEARCH_PATH, 200)] == 13
        assert time.monotonic() - started >= 12 / 4 - 0.25  # 13 searches: 1 at once, then 4 per second
        assert conn.search_caller.limiter is not conn.caller.limiter
    finally:
        sb.stop()


# -- resumption, timeouts, classification --------------------------------------------------------
def test_interrupted_first_read_resumes(gen: server.Sandbox) -> None:
    conn = make(gen, batch_size=200)
    first_until = gen.world.now()
    pages = conn.read("contacts", None, first_until)
    page = next(pages)
    pages.close()  # the run dies after its first stored page
    assert json.loads(page.cursor)["full"]["after"]
    rest, cursor, _ = run(conn, "contacts", page.cursor, gen.world.now())
    ids = {r["source_id"] for r in page.records} | {r["source_id"] for r in rest}
    assert ids == live_ids(gen.world, "contacts")
    assert not {r["source_id"] for r in page.records} & {r["source_id"] for r in rest}
    assert mod_of(cursor) == to_ms(first_until)  # changes since the first run's start are read next


def test_every_call_has_a_timeout(small: server.Sandbox) -> None:
    knobs = small.emulators["hubspot"].knobs
    knobs.timeout_rate, knobs.timeout_seconds = 1.0, 3.0
    conn = make(small, policy=Policy(timeout=0.3, max_attempts=2, backoff_initial=0.01, backoff_max=0.01,
                                     rate_per_second=1000, burst=1000))
    started = time.monotonic()
    with pytest.raises(TransientError, match="hubspot"):
        run(conn, "companies", None, small.world.now())
    assert time.monotonic() - started < 2.5
    assert conn.api_calls()["companies"] == 2


def _api_error(cls: type, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Exception:
    exc = cls(status=status, reason="x")
    exc.body, exc.headers = json.dumps(body).encode(), headers or {}
    return exc


def test_classify() -> None:
    assert isinstance(classify(_api_error(ContactsApiException, 401, {"message": "bad"})), AuthError)
    assert isinstance(classify(_api_error(OwnersApiException, 403, {"message": "scopes"})), AuthError)
    throttled = classify(_api_error(TasksApiException, 429, {"policyName": "SECONDLY"}))
    assert isinstance(throttled, TransientError) and throttled.retry_after == 1.0
    waited = classify(_api_error(AssocApiException, 429, {"policyName": "TEN_SECONDLY_ROLLING"},
                                 {"Retry-After": "7"}))
    assert isinstance(waited, TransientError) and waited.retry_after == 7.0
    assert isinstance(classify(_api_error(ContactsApiException, 429, {"policyName": "DAILY"})), BudgetExhausted)
    assert isinstance(classify(_api_error(AssocApiException, 503, {"message": "busy"})), TransientError)
    refused = classify(_api_error(ContactsApiException, 400, {"message": "nope", "category": "VALIDATION_ERROR"}))
    assert isinstance(refused, RequestError) and "VALIDATION_ERROR" in str(refused)
    dropped = urllib3.exceptions.ProtocolError("Connection aborted.")
    assert isinstance(classify(dropped), TransientError)
    assert isinstance(classify(urllib3.exceptions.MaxRetryError(None, "/x", dropped)), TransientError)
    assert isinstance(classify(urllib3.exceptions.ReadTimeoutError(None, "/x", "timed out")), TransientError)
    assert classify(KeyError("bug")) is None


def test_quiet_runs_skip_the_archived_list_until_something_is_archived(tmp_path: Path) -> None:
    """The archived list has no time filter (a call per 100 archived records, every run): a run reads
    it only when the live count says records were archived since the last completed run."""
    at = ANCHOR - timedelta(hours=1)
    w = contacts_world(300, at, step_ms=1000)
    for rec_id in list(w.hubspot["contacts"])[:250]:  # many archived long ago
        w.hs_archive("contacts", rec_id, at=at + timedelta(minutes=10))
    sb = server.start(w, tmp_path, vendors=("hubspot",))
    try:
        conn = make(sb)
        _, cursor, _ = run(conn, "contacts", None, w.now())
        reset_stats(sb)
        records, cursor, _ = run(make(sb), "contacts", cursor, w.now())
        assert records == [] and stats(sb)[(LIST_PATH, 200)] == 0  # search + count, no archived list
        assert sum(n for (path, _), n in stats(sb).items() if path == SEARCH_PATH) == 2
        created = w.hs_put("contacts", {"email": "new@x.example.com"})["id"]
        records, cursor, _ = run(make(sb), "contacts", cursor, w.now())
        assert [r["source_id"] for r in records] == [created] and stats(sb)[(LIST_PATH, 200)] == 0
        gone = next(i for i, r in w.hubspot["contacts"].items() if not r["archived"] and i != created)
        w.hs_archive("contacts", gone)
        records, cursor, _ = run(make(sb), "contacts", cursor, w.now())
        assert [(r["source_id"], r["deleted"]) for r in records] == [(gone, True)]
        assert stats(sb)[(LIST_PATH, 200)] == 3  # 251 archived, 100 a page
    finally:
        sb.stop()


def test_owners_read_the_archived_list_only_when_an_owner_left(gen: server.Sandbox) -> None:
    """Owners cannot be filtered by time: every run lists the active ones, and reads the archived
    list only when an owner active last time is no longer."""
    w = gen.world
    _, cursor, _ = run(make(gen), "owners", None, w.now())
    active = math.ceil(sum(1 for o in w.hs_owners.values() if not o.get("archived")) / 500)

    def owner_calls() -> int:
        return sum(n for k, n in stats(gen).items() if "owners" in k[0])

    reset_stats(gen)
    records, cursor, _ = run(make(gen), "owners", cursor, w.now())
    assert records == [] and owner_calls() == active
    leaving = next(o for o in w.hs_owners.values() if not o.get("archived"))
    before = dict(leaving)
    leaving.update(archived=True, updatedAt=hs_time(w.now()))
    try:
        reset_stats(gen)
        records, _, _ = run(make(gen), "owners", cursor, w.now())
        assert [(r["source_id"], r["deleted"]) for r in records] == [(str(leaving["id"]), True)]
        assert owner_calls() == active + 1
    finally:
        leaving.clear()
        leaving.update(before)
