"""ZendeskConnector against the Zendesk emulator (zenpy unmodified) and, where a crafted reply is the
point, against `responses`. The world's clock is frozen in these tests, so the exports' one-minute
cut-off and every "changed since" set are exact."""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import responses
from zenpy.lib.exception import APIException, RatelimitBudgetExceeded, RecordNotFoundException

from retention_hub.config.models import ZendeskSource
from retention_hub.connectors.http import AuthError, Policy, RequestError, TransientError
from retention_hub.connectors.records import Page
from retention_hub.connectors.zendesk import (SATISFACTION_KIND, STREAMS, WindowLimiter, ZendeskConnector,
                                              classify)
from retention_hub.sandbox import server
from retention_hub.sandbox.records import unix, zd_time
from retention_hub.sandbox.world import World
from retention_hub.sandbox.zendesk_paging import decode_export_cursor

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
T0 = ANCHOR - timedelta(days=30)
SHARED = T0 + timedelta(hours=1)  # organizations 5..12 and ratings 3..5 share this second
SMALL = {"export_page_size": 4, "list_page_size": 5}
FAST = Policy(rate_per_second=1000, burst=1000)  # the vendor pace (10/s) is not under test here


def freeze(world: World) -> World:
    """World time = anchor + days advanced, without the wall-clock drift: exact cut-offs."""
    world.now = lambda: world.anchor + timedelta(days=world.days_advanced)  # type: ignore[method-assign]
    return world


def build_world() -> World:
    """23 organizations, 35 users (4 agents, 1 admin, 1 deleted), 40 tickets, 12 ratings."""
    w = freeze(World(seed=1, anchor=ANCHOR))
    orgs = []
    externals = {0: "0015g00000AbCdEAA1", 1: "cus_Q1w2e3", 2: "legacy-42"}
    for i in range(23):
        at = SHARED if 5 <= i <= 12 else T0 + timedelta(minutes=i)
        orgs.append(w.zd_put("organizations", {
            "name": f"Org {i}", "domain_names": [] if i == 3 else [f"org{i}.example.com", f"org{i}.example.net"],
            "external_id": externals.get(i), "tags": ["smb"], "details": None, "notes": None,
            "group_id": None, "shared_tickets": False, "shared_comments": False, "organization_fields": {}}, at=at))
    users = []
    for i in range(35):
        role = "agent" if i < 4 else "admin" if i == 4 else "end-user"
        users.append(w.zd_put("users", {
            "name": f"User {i}", "email": f"User{i}@Example.com", "role": role,
            "organization_id": None if role != "end-user" or i % 9 == 0 else orgs[i % 23]["id"],
            "active": i != 7, "verified": True, "external_id": None, "tags": [], "user_fields": {}},
            at=T0 + timedelta(hours=2, minutes=i)))
    for i in range(40):
        requester = users[5 + i % 30]
        solved = i % 3 == 0
        w.zd_put("tickets", {
            "subject": f"Ticket {i}", "description": "x", "type": "question",
            "priority": [None, "low", "normal", "high", "urgent"][i % 5],
            "status": "deleted" if i % 10 == 9 else "solved" if solved else "open",
            "requester_id": requester["id"], "submitter_id": requester["id"], "assignee_id": users[i % 4]["id"],
            "organization_id": requester["organization_id"], "group_id": None,
            "tags": ["escalated"] if i % 7 == 0 else ["billing"], "via": {"channel": "email"},
            "custom_fields": [], "external_id": None,
            "satisfaction_rating": {"score": "good", "id": 900 + i, "comment": "Great"} if i == 3
            else {"score": "offered"} if i == 6 else {"score": "unoffered"},
            "_metric_set": {"solved_at": zd_time(T0 + timedelta(days=2, hours=i)) if solved else None,
                            "full_resolution_time_in_minutes": {"calendar": 90 if solved else None, "business": 30},
                            "reply_time_in_minutes": {"calendar": 12, "business": 6}}},
            at=T0 + timedelta(days=1, hours=i))
    for i in range(12):
        at = SHARED if 3 <= i <= 5 else T0 + timedelta(days=3, hours=i)
        w.zd_put("satisfaction_ratings", {"ticket_id": 1000 + i, "requester_id": users[10]["id"],
                                          "assignee_id": users[0]["id"], "group_id": None,
                                          "score": "bad" if i % 4 == 0 else "good", "comment": None}, at=at)
    return w


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def sb(world: World, tmp_path: Path) -> Iterator[Any]:
    sandbox = server.start(world, tmp_path, vendors=("zendesk",))
    yield sandbox
    sandbox.stop()


def connector(sandbox: Any, token: str | None = None, policy: Policy | None = None, **kwargs: Any) -> ZendeskConnector:
    cred = sandbox.credentials["zendesk"]
    config = ZendeskSource(subdomain=cred["subdomain"], email=cred["email"],
                           api_token=token or cred["api_token"], base_url=sandbox.urls["zendesk"])
    kwargs.setdefault("exports_per_minute", 10_000)  # pacing has its own test
    con = ZendeskConnector(config, policy or FAST, **kwargs)
    con.caller.sleep = lambda seconds: None  # backoff is recorded, not slept, unless a test says so
    return con


def read_all(con: ZendeskConnector, stream: str, cursor: str | None = None,
             until: datetime | None = None) -> list[Page]:
    return list(con.read(stream, cursor, until or con_now(), full_refresh=False))


def con_now() -> datetime:
    return datetime.now(timezone.utc)


def ids(pages: list[Page], kind: str | None = None) -> list[str]:
    return [r["source_id"] for p in pages for r in p.records if kind is None or r["kind"] == kind]


def by_id(pages: list[Page]) -> dict[tuple[str, str], dict]:
    return {(r["kind"], r["source_id"]): r for p in pages for r in p.records}


def position(stream: str, cursor: str) -> tuple:
    """Where a cursor stands, comparable across runs (the export cursors decoded from Zendesk's
    base64 layout, which the emulator copies)."""
    state = json.loads(cursor)
    if stream in ("tickets", "users"):
        return decode_export_cursor(state["after_cursor"])[0]
    return (state["start_time"],)


def served(sandbox: Any) -> Counter:
    """Requests the emulator answered, per (path, status)."""
    return Counter({(r["path"], r["status"]): r["count"] for r in sandbox.emulators["zendesk"].stats()["requests"]})


def world_ids(world: World, table: str, keep: Any = lambda r: True) -> set[str]:
    return {str(i) for i, r in world.zendesk[table].items() if keep(r)}


# -- full reads -------------------------------------------------------------------------------------
def test_full_read_maps_every_stream(sb, world):
    con = connector(sb)
    pages = {s: read_all(con, s) for s in STREAMS}
    assert con.streams() == list(STREAMS)
    assert set(ids(pages["organizations"])) == world_ids(world, "organizations")
    assert set(ids(pages["users"])) == world_ids(world, "users")
    assert set(ids(pages["tickets"])) == world_ids(world, "tickets")
    assert set(ids(pages["satisfaction_ratings"])) == world_ids(world, "satisfaction_ratings")
    for stream, stream_pages in pages.items():  # unique keys within a full read, nothing quarantined
        keys = [(r["kind"], r["source_id"]) for p in stream_pages for r in p.records]
        assert len(keys) == len(set(keys)), stream
        assert not any(p.quarantined for p in stream_pages)
        assert all(r["source"] == "zendesk" and r["updated_at"].tzinfo for p in stream_pages for r in p.records)

    orgs = sorted(world.zendesk["organizations"].values(), key=lambda o: o["id"])
    accounts = by_id(pages["organizations"])
    first = accounts[("account", str(orgs[0]["id"]))]["payload"]
    assert first["domain"] == "org0.example.com"
    assert first["domain_names"] == ["org0.example.com", "org0.example.net"]
    assert first["external_ids"] == {"salesforce": "0015g00000AbCdEAA1"}
    assert accounts[("account", str(orgs[1]["id"]))]["payload"]["external_ids"] == {"stripe": "cus_Q1w2e3"}
    assert accounts[("account", str(orgs[2]["id"]))]["payload"]["external_ids"] == {"external": "legacy-42"}
    assert accounts[("account", str(orgs[3]["id"]))]["payload"]["domain"] is None

    people = by_id(pages["users"])
    assert Counter(kind for kind, _ in people) == {"contact": 30, "user": 5}
    for u in world.zendesk["users"].values():
        rec = people[("contact" if u["role"] == "end-user" else "user", str(u["id"]))]
        assert rec["payload"]["email"] == u["email"].lower()
        assert rec["deleted"] is (not u["active"])
        if u["role"] == "end-user":
            org = u["organization_id"]
            assert rec["payload"]["account_id"] == (str(org) if org is not None else None)

    tickets = by_id(pages["tickets"])
    for t in world.zendesk["tickets"].values():
        p = tickets[("ticket", str(t["id"]))]["payload"]
        assert p["deleted"] is (t["status"] == "deleted")
        assert p["escalated"] is ("escalated" in t["tags"])
        assert p["priority"] == t["priority"] and p["status"] == t["status"]
        assert p["account_id"] == (str(t["organization_id"]) if t["organization_id"] else None)
        assert p["requester_id"] == str(t["requester_id"])
        solved = t["_metric_set"]["solved_at"]
        assert p["solved_at"] == (datetime.fromisoformat(solved.replace("Z", "+00:00")).isoformat() if solved else None)
        assert p["resolution_minutes"] == t["_metric_set"]["full_resolution_time_in_minutes"]["calendar"]
    rated = [r["payload"] for r in tickets.values() if r["payload"]["satisfaction"]]
    assert [(p["satisfaction"], p["satisfaction_comment"], p["satisfaction_rating_id"]) for p in rated] == \
        [("good", "Great", "903")]
    assert sum(r["payload"]["satisfaction_offered"] for r in tickets.values()) == 2

    ratings = by_id(pages["satisfaction_ratings"])
    for r in world.zendesk["satisfaction_ratings"].values():
        p = ratings[(SATISFACTION_KIND, str(r["id"]))]["payload"]
        assert (p["kind"], p["score"], p["ticket_id"]) == (SATISFACTION_KIND, r["score"], str(r["ticket_id"]))


def test_small_pages_paginate_and_calls_match_the_floor(sb, world):
    con = connector(sb, **SMALL)
    pages = {s: read_all(con, s) for s in STREAMS}
    n = {s: len(world.zendesk[s]) for s in STREAMS}
    calls = con.api_calls()
    assert calls["tickets"] == len(pages["tickets"]) == math.ceil(n["tickets"] / 4) == 10
    assert calls["users"] == math.ceil(n["users"] / 4)
    assert calls["satisfaction_ratings"] == math.ceil(n["satisfaction_ratings"] / 5)
    # the time-based export widens the page holding the shared second to keep it whole
    assert 1 < calls["organizations"] <= math.ceil(n["organizations"] / 4)
    assert len(ids(pages["organizations"])) == n["organizations"]  # the repeated boundary is skipped
    assert served(sb)[("/api/v2/incremental/tickets/cursor.json", 200)] == calls["tickets"]
    for stream, stream_pages in pages.items():  # within a run, too, the cursor only moves forward
        positions = [position(stream, p.cursor) for p in stream_pages]
        assert positions == sorted(positions), stream


def test_max_page_sizes_make_one_call_per_stream(sb):
    con = connector(sb)
    for stream in STREAMS:
        read_all(con, stream)
    assert con.api_calls() == {s: 1 for s in STREAMS}


def test_resuming_from_any_page_cursor_loses_and_repeats_nothing(sb):
    con = connector(sb, **SMALL)
    for stream in STREAMS:
        pages = read_all(con, stream)
        everything = ids(pages)
        assert len(pages) > 1, stream
        for k, page in enumerate(pages):
            before = ids(pages[:k + 1])
            rest = ids(read_all(con, stream, page.cursor))
            assert sorted(before + rest) == sorted(everything), (stream, k)


# -- incremental runs -------------------------------------------------------------------------------
def test_second_run_with_nothing_changed_yields_nothing(sb):
    first = connector(sb, **SMALL)
    cursors = {s: read_all(first, s)[-1].cursor for s in STREAMS}
    second = connector(sb, **SMALL)
    for stream in STREAMS:
        assert read_all(second, stream, cursors[stream]) == []
    assert second.api_calls() == {s: 1 for s in STREAMS}  # the standard check allows 2


def test_next_run_yields_exactly_what_changed_including_deletions(sb, world):
    con = connector(sb, **SMALL)
    cursors = {s: read_all(con, s)[-1].cursor for s in STREAMS}
    world.advance(1)
    at = world.now() - timedelta(hours=3)
    orgs, users, tickets = (sorted(world.zendesk[k]) for k in ("organizations", "users", "tickets"))
    with world.lock:
        world.zd_put("organizations", {"id": orgs[6], "name": "Renamed"}, at=at)  # one of the shared second
        new_org = world.zd_put("organizations", {"name": "New Org", "domain_names": ["new.example.com"]}, at=at)
        world.zd_put("users", {"id": users[12], "active": False}, at=at)  # Zendesk's deleted user
        new_user = world.zd_put("users", {"name": "New", "email": "new@x.com", "role": "end-user",
                                          "organization_id": new_org["id"], "active": True}, at=at)
        world.zd_put("tickets", {"id": tickets[4], "status": "deleted"}, at=at)
        world.zd_put("tickets", {"id": tickets[5], "status": "solved",
                                 "satisfaction_rating": {"score": "bad", "id": 77, "comment": "No"}}, at=at)
        rating = world.zd_put("satisfaction_ratings", {"ticket_id": tickets[5], "score": "bad", "comment": "No"}, at=at)
        # inside the export's last minute: not visible yet, so not read and not lost
        world.zd_put("tickets", {"id": tickets[6], "priority": "urgent"}, at=world.now() - timedelta(seconds=20))
    expected = {"organizations": {str(orgs[6]), str(new_org["id"])}, "users": {str(users[12]), str(new_user["id"])},
                "tickets": {str(tickets[4]), str(tickets[5])}, "satisfaction_ratings": {str(rating["id"])}}
    until = world.now()
    second = connector(sb, **SMALL)
    new_cursors = {}
    for stream in STREAMS:
        pages = read_all(second, stream, cursors[stream], until)
        assert set(ids(pages)) == expected[stream] and len(ids(pages)) == len(expected[stream]), stream
        new_cursors[stream] = pages[-1].cursor
        assert position(stream, new_cursors[stream]) > position(stream, cursors[stream])  # never backwards
    changed = by_id(read_all(connector(sb), "tickets", cursors["tickets"]))
    assert changed[("ticket", str(tickets[4]))]["deleted"] is True
    assert changed[("ticket", str(tickets[5]))]["payload"]["satisfaction"] == "bad"
    people = by_id(read_all(connector(sb), "users", cursors["users"]))
    assert people[("contact", str(users[12]))]["deleted"] is True
    # the minute-old change shows up once it is older than a minute
    world.advance(1)
    assert ids(read_all(second, "tickets", new_cursors["tickets"])) == [str(tickets[6])]


def test_time_cursors_are_never_saved_past_until(sb):
    until = T0 + timedelta(minutes=10)  # after a few organizations, before most records
    con = connector(sb, **SMALL)
    for stream in ("organizations", "satisfaction_ratings"):
        pages = read_all(con, stream, until=until)
        assert len(ids(pages)) > 0
        assert all(json.loads(p.cursor)["start_time"] <= unix(until) for p in pages)
    tickets = read_all(con, "tickets", until=until)  # Zendesk's own cursor is not capped
    assert len(ids(tickets)) == 40


# -- faults -----------------------------------------------------------------------------------------
def test_survives_429_5xx_and_dropped_connections(sb, world):
    clean = {s: by_id(read_all(connector(sb, **SMALL), s)) for s in STREAMS}
    emulator = sb.emulators["zendesk"]
    # the emulator's fault dice are seeded and untouched by the clean read: the same faults every time
    emulator.knobs.update({"throttle_rate": 0.2, "error_rate": 0.2, "drop_rate": 0.05})
    con = connector(sb, **SMALL)
    waits: list[float] = []
    con.caller.sleep = waits.append
    faulty = {s: by_id(read_all(con, s)) for s in STREAMS}
    assert faulty == clean
    statuses = Counter(status for (_, status) in served(sb).elements())
    assert statuses[429] > 0 and sum(statuses[s] for s in (500, 502, 503)) > 0
    assert sum(con.caller.retries.values()) >= statuses[429] + statuses[500] + statuses[502] + statuses[503]
    assert max(waits) >= 1.0  # the emulator's Retry-After: 1 was honoured by the policy, not by zenpy


def test_401_stops_at_once_with_a_clear_auth_error(sb):
    bad_token = "not-the-token-" + "x" * 20
    con = connector(sb, token=bad_token)
    with pytest.raises(AuthError) as info:
        read_all(con, "tickets")
    message = str(info.value)
    assert message.startswith("zendesk: authentication failed (HTTP 401")
    assert "api_token" in message and bad_token not in message
    assert con.api_calls() == {"tickets": 1}  # no retries


def test_zenpy_env_switches_are_neither_needed_nor_touched(sb, monkeypatch):
    monkeypatch.setenv("ZENPY_FORCE_SCHEME", "https")  # another client in this process points elsewhere
    monkeypatch.setenv("ZENPY_FORCE_NETLOC", "127.0.0.1:9")
    before = dict(os.environ)
    con = connector(sb)
    assert len(ids(read_all(con, "organizations"))) == 23
    assert dict(os.environ) == before


def test_exports_are_paced_under_their_own_limit(sb):
    con = connector(sb, **SMALL)
    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    con.export_limiter = WindowLimiter(3, window=60.0, margin=1.0, clock=lambda: clock[0], sleep=sleep)
    read_all(con, "tickets")  # 10 export pages: 3 at once, then 3 per 61 s
    assert waits == [61.0, 61.0, 61.0]
    assert clock[0] == 183.0
    read_all(con, "satisfaction_ratings")  # a list, not an export: not paced by the export limit
    assert clock[0] == 183.0


def test_window_limiter_never_allows_more_than_limit_per_window():
    clock = [0.0]
    starts: list[float] = []
    limiter = WindowLimiter(10, window=60.0, margin=0.5, clock=lambda: clock[0],
                            sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    for i in range(35):
        clock[0] += 0.7 if i % 4 else 0.0
        limiter.acquire()
        starts.append(clock[0])
    for i, t in enumerate(starts):
        assert sum(1 for u in starts if t - 60.0 < u <= t) <= 10, i
    assert starts[10] == pytest.approx(starts[0] + 60.5)


# -- classification and crafted replies (responses) -------------------------------------------------
def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body if body is not None else {"error": "X", "description": "y"}).encode()
    r.headers.update(headers or {})
    return r


@pytest.mark.parametrize("exc, cls, retry_after", [
    (APIException("{}", response=response(401, {"error": "Couldn't authenticate you"})), AuthError, None),
    (APIException("{}", response=response(403, {"error": "Forbidden"})), AuthError, None),
    (APIException("{}", response=response(429, headers={"Retry-After": "7"})), TransientError, 7.0),
    (APIException("{}", response=response(503)), TransientError, None),
    (requests.HTTPError(response=response(502)), TransientError, None),
    (APIException("{}", response=response(422, {"error": "InvalidValue"})), RequestError, None),
    (APIException("{}", response=response(400)), RequestError, None),
    (RecordNotFoundException("{}", response=response(404, {"error": "RecordNotFound"})), RequestError, None),
    (RatelimitBudgetExceeded("spent"), TransientError, None),
    (requests.ConnectionError("reset"), TransientError, None),
    (requests.Timeout("slow"), TransientError, None),
])
def test_classify(exc, cls, retry_after):
    mapped = classify(exc)
    assert type(mapped) is cls and str(mapped).startswith("zendesk: ")
    assert getattr(mapped, "retry_after", None) == retry_after
    assert classify(KeyError("x")) is None


BASE = "https://acme.zendesk.com"
ORG_EXPORT = f"{BASE}/api/v2/incremental/organizations.json"


def offline_connector(**kwargs: Any) -> ZendeskConnector:
    config = ZendeskSource(subdomain="acme", email="ops@acme.com", api_token="secret-token")
    con = ZendeskConnector(config, **kwargs)
    con.caller.sleep = lambda seconds: None
    return con


@responses.activate
def test_unreadable_record_is_quarantined_and_the_run_goes_on():
    good = {"id": 1, "name": "Acme", "updated_at": "2026-10-01T00:00:00Z", "domain_names": ["acme.com"]}
    bad = {"id": 2, "name": "Broken", "updated_at": "yesterday-ish"}
    responses.get(ORG_EXPORT, json={"organizations": [good, bad], "end_time": 1790812800,
                                    "end_of_stream": True, "next_page": None, "count": 2})
    pages = read_all(offline_connector(), "organizations")
    assert [r["source_id"] for r in pages[0].records] == ["1"]
    assert [(q.kind, q.source_id) for q in pages[0].quarantined] == [("account", "2")]
    assert "ValueError" in pages[0].quarantined[0].reason
    call = responses.calls[0].request
    assert call.url == f"{ORG_EXPORT}?start_time=0&per_page=1000"
    assert call.headers["Authorization"].startswith("Basic ")


@responses.activate
def test_429_retry_after_is_waited_by_the_policy_not_by_zenpy():
    responses.get(ORG_EXPORT, status=429, json={"error": "APIRateLimitExceeded"}, headers={"Retry-After": "7"})
    responses.get(ORG_EXPORT, json={"organizations": [], "end_time": 0, "end_of_stream": True})
    con = offline_connector()
    waits: list[float] = []
    con.caller.sleep = waits.append
    assert read_all(con, "organizations")[0].records == []
    assert len(waits) == 1 and waits[0] >= 7.0
    assert con.api_calls() == {"organizations": 2}


@responses.activate
def test_403_and_422_are_not_retried():
    responses.get(ORG_EXPORT, status=403, json={"error": "Forbidden", "description": "You do not have access"})
    con = offline_connector()
    with pytest.raises(AuthError, match="403: Forbidden - You do not have access"):
        read_all(con, "organizations")
    responses.replace(responses.GET, ORG_EXPORT, status=422,
                      json={"error": "InvalidValue", "description": "Too recent start_time."})
    with pytest.raises(RequestError, match="422"):
        read_all(con, "organizations")
    assert con.api_calls() == {"organizations": 2}


def test_a_foreign_cursor_is_refused_with_what_to_do():
    with pytest.raises(RequestError, match="--full-refresh"):
        read_all(offline_connector(), "tickets", json.dumps({"start_time": 5}))
    with pytest.raises(ValueError, match="unknown zendesk stream"):
        read_all(offline_connector(), "macros")


# -- a generated world ------------------------------------------------------------------------------
def test_generated_world_full_read_at_the_floor_then_one_day_of_changes(tmp_path):
    from retention_hub.sandbox.generator import generate_world

    world = freeze(generate_world(200, seed=5, directory=tmp_path, anchor=ANCHOR))
    sandbox = server.start(world, tmp_path / "sb", vendors=("zendesk",))
    try:
        con = connector(sandbox)
        first = {s: read_all(con, s, until=world.now()) for s in STREAMS}
        counts = {s: len(world.zendesk[s]) for s in STREAMS}
        lag = unix(world.now()) - 60  # the exports withhold the last minute
        stamp = {"tickets": lambda r: r["generated_timestamp"],
                 "users": lambda r: unix(datetime.fromisoformat(r["updated_at"].replace("Z", "+00:00"))),
                 "organizations": lambda r: unix(datetime.fromisoformat(r["updated_at"].replace("Z", "+00:00")))}
        for s in STREAMS:
            visible = world_ids(world, s, (lambda r, s=s: stamp[s](r) <= lag) if s in stamp else (lambda r: True))
            assert set(ids(first[s])) == visible and len(ids(first[s])) == len(visible), s
        floor = {s: math.ceil(counts[s] / (100 if s == "satisfaction_ratings" else 1000)) for s in STREAMS}
        assert con.api_calls() == floor
        print(f"\nzendesk, 200 customers: records {counts}, calls {con.api_calls()}, floor {floor}")

        before = {s: {str(i): stamp[s](r) if s in stamp else 0 for i, r in world.zendesk[s].items()} for s in STREAMS}
        world.advance(1)
        new_lag = unix(world.now()) - 60
        second = connector(sandbox)
        for s in STREAMS:
            pages = read_all(second, s, first[s][-1].cursor, until=world.now())
            got = ids(pages)
            if s in stamp:
                expected = world_ids(world, s, lambda r, s=s: lag < stamp[s](r) <= new_lag)
            else:
                expected = world_ids(world, s) - set(before[s])
            assert set(got) == expected and len(got) == len(expected), s
            for r in (r for p in pages for r in p.records):
                raw = world.zendesk[s][int(r["source_id"])]
                assert r["deleted"] is (raw.get("status") == "deleted" or raw.get("active") is False)
    finally:
        sandbox.stop()
