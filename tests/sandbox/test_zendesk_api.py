"""The Zendesk emulator against zenpy 2.0.57 (unmodified, pointed at it through ZENPY_FORCE_*)
and against raw HTTP where headers, bodies and status codes are the point."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from zenpy import Zenpy
from zenpy.lib.api_objects import Comment, Organization, Ticket
from zenpy.lib.exception import (APIException, RatelimitBudgetExceeded, RecordNotFoundException,
                                 TooManyValuesException)

from retention_hub.sandbox import server
from retention_hub.sandbox.records import unix
from retention_hub.sandbox.world import World

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
T0 = ANCHOR - timedelta(days=400)
N_TICKETS, N_USERS, N_ORGS, N_RATINGS = 3500, 700, 350, 400
SHARED_TS = T0 + timedelta(days=10)  # 1,500 tickets share this generated_timestamp
MOVED = (5, 10)  # tickets updated last: they leave their place and go to the end of the export
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")


def build_world() -> World:
    """350 orgs, 700 users, 3,500 tickets (35 deleted) and 400 ratings, with shared timestamps."""
    w = World(seed=1, anchor=ANCHOR)
    orgs = []
    for i in range(N_ORGS):
        at = (T0 + timedelta(minutes=i) if i < 50 else T0 + timedelta(hours=2) if i < 170
              else T0 + timedelta(hours=3, minutes=i))
        orgs.append(w.zd_put("organizations", {
            "name": f"Org {i:03d}", "domain_names": [f"org{i}.example.com"], "external_id": None,
            "details": None, "notes": None, "tags": [], "group_id": None, "shared_tickets": False,
            "shared_comments": False, "organization_fields": {}}, at=at))
    users = []
    for i in range(N_USERS):
        role = "agent" if i % 10 == 0 else "admin" if i % 50 == 1 else "end-user"
        at = T0 + timedelta(days=1) if 200 <= i < 400 else T0 + timedelta(minutes=i)
        users.append(w.zd_put("users", {
            "name": f"User {i}", "email": f"user{i}@example.com", "role": role,
            "organization_id": None if i % 7 == 0 else orgs[i % N_ORGS]["id"], "active": True,
            "verified": True, "external_id": None, "tags": [], "user_fields": {}}, at=at))
    agents = [u for u in users if u["role"] == "agent"]
    tickets = []
    for i in range(N_TICKETS):
        at = (T0 + timedelta(minutes=i) if i < 900 else SHARED_TS if i < 2400
              else T0 + timedelta(days=20, minutes=i))
        requester = users[i % N_USERS]
        status = "deleted" if i % 100 == 0 else STATUSES[i % len(STATUSES)]
        tickets.append(w.zd_put("tickets", {
            "subject": f"Ticket {i}", "description": f"Ticket {i}.", "type": "question",
            "priority": "normal", "status": status, "requester_id": requester["id"],
            "submitter_id": requester["id"], "assignee_id": agents[i % len(agents)]["id"],
            "organization_id": requester["organization_id"], "group_id": None, "tags": [],
            "via": {"channel": "email"}, "custom_fields": [], "external_id": None,
            "satisfaction_rating": {"score": "unoffered"},
            "_metric_set": {"solved_at": None, "full_resolution_time_in_minutes": {"calendar": 60, "business": 30},
                            "reply_time_in_minutes": {"calendar": 5, "business": 2}}}, at=at))
    for i in MOVED:
        w.zd_put("tickets", {"id": tickets[i]["id"], "priority": "high"}, at=T0 + timedelta(days=30))
    for i in range(N_RATINGS):
        t = tickets[i + 1]
        w.zd_put("satisfaction_ratings", {
            "ticket_id": t["id"], "requester_id": t["requester_id"], "assignee_id": t["assignee_id"],
            "group_id": None, "score": "bad" if i % 3 == 0 else "good",
            "comment": "Slow." if i % 2 == 0 else None}, at=T0 + timedelta(hours=i))
    return w


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


@pytest.fixture(scope="module")
def sb(world: World, tmp_path_factory: pytest.TempPathFactory):
    sandbox = server.start(world, tmp_path_factory.mktemp("zendesk"), vendors=("zendesk",))
    yield sandbox
    sandbox.stop()


def client(sandbox, monkeypatch: pytest.MonkeyPatch, **kwargs) -> Zenpy:
    """zenpy as a user would build it, redirected to the emulator by its own env switches."""
    monkeypatch.setenv("ZENPY_FORCE_SCHEME", "http")
    monkeypatch.setenv("ZENPY_FORCE_NETLOC", sandbox.urls["zendesk"].split("://", 1)[1])
    cred = sandbox.credentials["zendesk"]
    kwargs.setdefault("token", cred["api_token"])
    return Zenpy(subdomain=cred["subdomain"], email=cred["email"], **kwargs)


@pytest.fixture
def zd(sb, monkeypatch: pytest.MonkeyPatch) -> Zenpy:
    return client(sb, monkeypatch)


def get(sandbox, path_or_url: str, **params) -> requests.Response:
    cred = sandbox.credentials["zendesk"]
    url = path_or_url if path_or_url.startswith("http") else sandbox.urls["zendesk"] + path_or_url
    return requests.get(url, params=params or None, timeout=30,
                        auth=(f"{cred['email']}/token", cred["api_token"]))


def calls(sandbox, method: str, path: str) -> int:
    """Requests served on `path` (with or without `.json`: zenpy uses both spellings)."""
    bare = path.removesuffix(".json")
    return sum(r["count"] for r in sandbox.emulators["zendesk"].stats()["requests"]
               if r["method"] == method and r["path"] in (path, bare))


def deleted_count(world: World) -> int:
    return sum(1 for t in world.zendesk["tickets"].values() if t["status"] == "deleted")


# -- incremental ticket export --------------------------------------------------------------------
def test_zenpy_cursor_export_reads_3500_tickets_in_4_pages(sb, zd):
    path = "/api/v2/incremental/tickets/cursor.json"
    before = calls(sb, "GET", path)
    tickets = list(zd.tickets.incremental(start_time=unix(T0), paginate_by_time=False, per_page=1000))
    ids = [t.id for t in tickets]
    assert len(ids) == N_TICKETS and len(set(ids)) == N_TICKETS
    assert calls(sb, "GET", path) - before == math.ceil(N_TICKETS / 1000)
    keys = [(t.generated_timestamp, t.id) for t in tickets]
    assert keys == sorted(keys)  # by generated_timestamp, then id
    assert [t.id for t in tickets[-2:]] == [k for k in sorted(
        t["id"] for t in sb.world.zendesk["tickets"].values() if t["priority"] == "high")]
    assert sum(1 for t in tickets if t.status == "deleted") == 35  # deletions stay in the stream


def test_shared_timestamp_across_page_boundaries_loses_and_repeats_nothing(sb):
    base = sb.urls["zendesk"]
    url, pages, seen, last = f"{base}/api/v2/incremental/tickets/cursor.json", [], [], None
    body = get(sb, url, start_time=unix(T0), per_page=1000).json()
    while True:
        assert set(body) == {"tickets", "after_url", "after_cursor", "before_url", "before_cursor",
                             "end_of_stream"}
        keys = [(t["generated_timestamp"], t["id"]) for t in body["tickets"]]
        assert keys == sorted(keys) and (last is None or keys[0] > last)
        last = keys[-1]
        pages.append(body)
        seen += [t["id"] for t in body["tickets"]]
        assert body["after_url"].startswith(base + "/api/v2/incremental/tickets/cursor.json?cursor=")
        if body["end_of_stream"]:
            break
        body = get(sb, body["after_url"]).json()
    assert len(pages) == 4 and len(seen) == len(set(seen)) == N_TICKETS
    shared = unix(SHARED_TS)
    for a, b in zip(pages[:2], pages[1:3]):  # pages 1|2 and 2|3 split inside the shared second
        assert a["tickets"][-1]["generated_timestamp"] == b["tickets"][0]["generated_timestamp"] == shared
    assert pages[0]["before_cursor"] is None and pages[0]["before_url"] is None
    assert [p["end_of_stream"] for p in pages] == [False, False, False, True]
    # polling again from the last cursor: nothing new, same cursor back, still end of stream
    again = get(sb, pages[-1]["after_url"]).json()
    assert again["tickets"] == [] and again["end_of_stream"] is True
    assert again["after_cursor"] == pages[-1]["after_cursor"]
    # before_url of page 3 leads back to exactly page 2
    back = get(sb, pages[2]["before_url"]).json()
    assert [t["id"] for t in back["tickets"]] == [t["id"] for t in pages[1]["tickets"]]


def test_export_side_loads_users_organizations_and_metric_sets(sb, world):
    body = get(sb, "/api/v2/incremental/tickets/cursor.json", start_time=unix(T0), per_page=50,
               include="users,organizations,metric_sets").json()
    tickets = body["tickets"]
    assert len(tickets) == 50 and body["end_of_stream"] is False
    assert all("_metric_set" not in t for t in tickets)
    assert [m["ticket_id"] for m in body["metric_sets"]] == [t["id"] for t in tickets]
    assert body["metric_sets"][0]["full_resolution_time_in_minutes"] == {"calendar": 60, "business": 30}
    user_ids = {u["id"] for u in body["users"]}
    assert {t["requester_id"] for t in tickets} | {t["assignee_id"] for t in tickets} <= user_ids
    org_ids = {o["id"] for o in body["organizations"]}
    assert {t["organization_id"] for t in tickets if t["organization_id"]} == org_ids
    assert "include=users,organizations,metric_sets" in body["after_url"]
    assert "per_page=50" in body["after_url"]
    t = tickets[1]
    assert t["url"] == f"{sb.urls['zendesk']}/api/v2/tickets/{t['id']}.json"
    for key in ("raw_subject", "collaborator_ids", "follower_ids", "brand_id", "is_public", "fields"):
        assert key in t


def test_exclude_deleted_drops_deletions(sb, world):
    url, ids = "/api/v2/incremental/tickets/cursor.json", []
    body = get(sb, url, start_time=unix(T0), exclude_deleted="true").json()
    while True:
        ids += [t["id"] for t in body["tickets"]]
        assert all(t["status"] != "deleted" for t in body["tickets"])
        if body["end_of_stream"]:
            break
        assert "exclude_deleted=true" in body["after_url"]
        body = get(sb, body["after_url"]).json()
    assert len(ids) == len(set(ids)) == N_TICKETS - deleted_count(world)


def test_export_start_time_and_cursor_errors(sb, world, zd):
    path, now = "/api/v2/incremental/tickets/cursor.json", unix(world.now())
    missing = get(sb, path)
    assert missing.status_code == 400 and missing.json()["error"] == "InvalidValue"
    assert get(sb, path, start_time="yesterday").status_code == 400
    future = get(sb, path, start_time=now + 3600)
    assert future.status_code == 400 and "future" in future.json()["description"]
    recent = get(sb, path, start_time=now - 10)
    assert recent.status_code == 422
    assert recent.json() == {"error": "InvalidValue",
                             "description": "Too recent start_time. Use a start_time older than 1 minute"}
    assert get(sb, path, cursor="not-a-cursor!").status_code == 400
    assert get(sb, path, start_time=unix(T0), per_page="many").status_code == 400
    assert get(sb, path, cursor="", start_time=unix(T0), per_page=5).status_code == 200
    with pytest.raises(APIException) as exc:
        list(zd.tickets.incremental(start_time=now + 3600, paginate_by_time=False))
    assert exc.value.response.status_code == 400


# -- the other incremental exports ----------------------------------------------------------------
def test_zenpy_user_cursor_export_past_page_3(sb, zd):
    path = "/api/v2/incremental/users/cursor.json"
    before = calls(sb, "GET", path)
    users = list(zd.users.incremental(start_time=unix(T0), paginate_by_time=False, per_page=200))
    assert len(users) == len({u.id for u in users}) == N_USERS
    assert calls(sb, "GET", path) - before == 4
    keys = [(unix(datetime.fromisoformat(u.updated_at.replace("Z", "+00:00"))), u.id) for u in users]
    assert keys == sorted(keys)


def test_zenpy_time_based_organization_export(sb, zd):
    path = "/api/v2/incremental/organizations.json"
    before = calls(sb, "GET", path)
    orgs = list(zd.organizations.incremental(start_time=unix(T0), per_page=100))
    assert {o.id for o in orgs} == set(sb.world.zendesk["organizations"])
    assert len(orgs) > N_ORGS  # documented: time-based pages repeat records at end_time
    assert 4 <= calls(sb, "GET", path) - before <= 6
    first = get(sb, path, start_time=unix(T0), per_page=100).json()
    # the page runs past per_page to hold all 120 organizations that share its last timestamp
    assert first["count"] == len(first["organizations"]) == 170
    assert first["end_time"] == unix(T0 + timedelta(hours=2)) and first["end_of_stream"] is False
    assert first["next_page"] == (f"{sb.urls['zendesk']}/api/v2/incremental/organizations.json"
                                  f"?start_time={first['end_time']}&per_page=100")


# -- lists ----------------------------------------------------------------------------------------
def test_zenpy_lists_use_cursor_pagination_past_page_3(sb, zd, world):
    for path, fetch, expected in (
            ("/api/v2/organizations.json", zd.organizations, N_ORGS),
            ("/api/v2/users.json", zd.users, N_USERS),
            ("/api/v2/satisfaction_ratings.json", zd.satisfaction_ratings, N_RATINGS),
            ("/api/v2/tickets.json", zd.tickets, N_TICKETS - deleted_count(world))):
        before = calls(sb, "GET", path)
        ids = [o.id for o in fetch()]
        assert len(ids) == len(set(ids)) == expected, path
        assert ids == sorted(ids)
        assert calls(sb, "GET", path) - before == math.ceil(expected / 100), path


def test_cursor_links_meta_and_backwards(sb):
    base = sb.urls["zendesk"]
    first = get(sb, "/api/v2/users.json", **{"page[size]": 100, "role": "end-user"}).json()
    assert set(first) == {"users", "meta", "links"} and first["meta"]["has_more"] is True
    assert first["links"]["next"].startswith(base + "/api/v2/users.json?page[size]=100&page[after]=")
    assert "role=end-user" in first["links"]["next"]
    second = get(sb, first["links"]["next"]).json()
    back = get(sb, second["links"]["prev"]).json()
    assert [u["id"] for u in back["users"]] == [u["id"] for u in first["users"]]
    assert all(u["role"] == "end-user" for u in first["users"] + second["users"])


def test_user_role_filters(sb, zd, world):
    agents = sorted(u["id"] for u in world.zendesk["users"].values() if u["role"] == "agent")
    staff = sorted(u["id"] for u in world.zendesk["users"].values() if u["role"] in ("agent", "admin"))
    assert [u.id for u in zd.users(role="agent")] == agents
    assert [u.id for u in zd.users(role=["agent", "admin"])] == staff
    assert get(sb, "/api/v2/users.json", role="wizard").status_code == 400


def test_offset_pagination(sb):
    url, ids, pages = "/api/v2/users.json", [], 0
    body = get(sb, url, per_page=100).json()
    assert body["count"] == N_USERS and body["previous_page"] is None
    while True:
        pages += 1
        ids += [u["id"] for u in body["users"]]
        if body["next_page"] is None:
            break
        assert body["next_page"].startswith(sb.urls["zendesk"])
        body = get(sb, body["next_page"]).json()
        assert f"page={pages}" in body["previous_page"]
    assert pages == 7 and len(set(ids)) == N_USERS
    assert len(get(sb, url, per_page=1000).json()["users"]) == 100  # capped at 100
    deep = get(sb, url, page=101, per_page=100)
    assert deep.status_code == 400 and deep.json()["error"] == "InvalidPaginationParameter"


def test_satisfaction_rating_filters(sb, world):
    ratings = list(world.zendesk["satisfaction_ratings"].values())

    def fetch(**params) -> list[int]:
        ids, body = [], get(sb, "/api/v2/satisfaction_ratings.json", **{"page[size]": 100}, **params).json()
        while True:
            ids += [r["id"] for r in body["satisfaction_ratings"]]
            if not body["meta"]["has_more"]:
                return ids
            body = get(sb, body["links"]["next"]).json()

    assert fetch(score="bad") == sorted(r["id"] for r in ratings if r["score"] == "bad")
    assert fetch(score="good_with_comment") == sorted(
        r["id"] for r in ratings if r["score"] == "good" and r["comment"])
    assert fetch(score="received_without_comment") == sorted(r["id"] for r in ratings if not r["comment"])
    lo, hi = unix(T0 + timedelta(hours=100)), unix(T0 + timedelta(hours=199))
    window = fetch(start_time=lo, end_time=hi)
    assert len(window) == 100 and window == sorted(window)
    desc = get(sb, "/api/v2/satisfaction_ratings.json", sort_order="desc", per_page=5).json()
    assert [r["id"] for r in desc["satisfaction_ratings"]] == sorted(
        (r["id"] for r in ratings), reverse=True)[:5]
    assert get(sb, "/api/v2/satisfaction_ratings.json", score="meh").status_code == 400


def test_organization_tickets_and_users(sb, zd, world):
    org_id = sorted(world.zendesk["organizations"])[3]
    tickets = sorted(t["id"] for t in world.zendesk["tickets"].values()
                     if t["organization_id"] == org_id and t["status"] != "deleted")
    users = sorted(u["id"] for u in world.zendesk["users"].values() if u["organization_id"] == org_id)
    assert tickets and users
    assert [t.id for t in zd.tickets.organizations(org_id)] == tickets
    assert [u.id for u in zd.organizations.users(org_id)] == users
    body = get(sb, f"/api/v2/organizations/{org_id}/tickets.json", per_page=2).json()
    assert body["count"] == len(tickets) and len(body["tickets"]) == 2
    assert get(sb, "/api/v2/organizations/1/users.json").status_code == 404


# -- shows ----------------------------------------------------------------------------------------
def test_shows_show_many_and_me(sb, zd, world):
    base = sb.urls["zendesk"]
    ticket_id = sorted(world.zendesk["tickets"])[1]
    t = get(sb, f"/api/v2/tickets/{ticket_id}.json").json()["ticket"]
    assert t["url"] == f"{base}/api/v2/tickets/{ticket_id}.json" and t["subject"] == "Ticket 1"
    assert get(sb, f"/api/v2/tickets/{ticket_id}").json()["ticket"]["id"] == ticket_id  # no .json
    user_id, org_id = sorted(world.zendesk["users"])[2], sorted(world.zendesk["organizations"])[2]
    rating_id = sorted(world.zendesk["satisfaction_ratings"])[0]
    u = zd.users(id=user_id)
    assert u.email == "user2@example.com" and u.url == f"{base}/api/v2/users/{user_id}.json"
    assert zd.organizations(id=org_id).name == "Org 002"
    r = get(sb, f"/api/v2/satisfaction_ratings/{rating_id}.json").json()["satisfaction_rating"]
    assert r["url"].endswith(f"/satisfaction_ratings/{rating_id}.json") and r["score"] in ("good", "bad")
    ids = sorted(world.zendesk["tickets"])[1:6]
    assert [x.id for x in zd.tickets(ids=ids)] == ids
    many = get(sb, "/api/v2/users/show_many.json", ids=",".join(map(str, sorted(world.zendesk["users"])[:3])))
    assert len(many.json()["users"]) == 3
    assert len(get(sb, "/api/v2/organizations/show_many.json", ids=f"{org_id},1").json()["organizations"]) == 1
    with pytest.raises(TooManyValuesException):
        zd.tickets(ids=list(range(1, 102)))
    me = zd.users.me()
    assert me.email == sb.credentials["zendesk"]["email"] and me.role == "admin"
    with pytest.raises(RecordNotFoundException):
        zd.tickets(id=999_999_999)
    deleted_id = next(t["id"] for t in world.zendesk["tickets"].values() if t["status"] == "deleted")
    gone = get(sb, f"/api/v2/tickets/{deleted_id}.json")
    assert gone.status_code == 404 and gone.json() == {"error": "RecordNotFound", "description": "Not found"}
    unknown = get(sb, "/api/v2/widgets.json")
    assert unknown.status_code == 404 and unknown.json()["error"] == "InvalidEndpoint"


# -- writes ---------------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path: Path):
    w = World(seed=2, anchor=ANCHOR)
    org = w.zd_put("organizations", {"name": "Acme", "domain_names": ["acme.com"]}, at=T0)
    user = w.zd_put("users", {"name": "Ann", "email": "ann@acme.com", "role": "end-user",
                              "organization_id": org["id"]}, at=T0)
    agent = w.zd_put("users", {"name": "Al", "email": "al@help.com", "role": "agent"}, at=T0)
    for i in range(20):
        w.zd_put("tickets", {"subject": f"T{i}", "status": "open", "priority": "normal",
                             "requester_id": user["id"], "organization_id": org["id"], "tags": ["x"]},
                 at=T0 + timedelta(hours=i))
    sandbox = server.start(w, tmp_path / "sb", vendors=("zendesk",))
    yield sandbox, org, user, agent
    sandbox.stop()


def test_ticket_create_and_update_reappear_in_next_export(small, monkeypatch):
    sandbox, org, user, agent = small
    world, zd = sandbox.world, client(sandbox, monkeypatch)
    export = zd.tickets.incremental(start_time=unix(T0), paginate_by_time=False)
    first = list(export)
    assert len(first) == 20 and export.end_of_stream is True
    cursor = export.after_cursor

    audit = zd.tickets.create(Ticket(subject="Renewal at risk", comment=Comment(body="Call them."),
                                     priority="high", requester_id=user["id"], tags=["churn_risk"]))
    created = audit.ticket
    assert created.status == "new" and created.organization_id == org["id"]
    assert created.description == "Call them." and created.via.channel == "api"
    target = zd.tickets(id=first[3].id)
    target.status, target.priority, target.assignee_id = "solved", "urgent", agent["id"]
    updated = zd.tickets.update(target).ticket
    assert updated.status == "solved" and updated.priority == "urgent"
    assert world.zendesk["tickets"][first[3].id]["_metric_set"]["solved_at"]

    # exports leave out the most recent minute, so the changes are not there yet ...
    assert list(zd.tickets.incremental(cursor=cursor)) == []
    world.advance(1)  # ... and are once the world has moved on
    again = {t.id: t for t in zd.tickets.incremental(cursor=cursor)}
    assert set(again) == {created.id, first[3].id}
    assert again[first[3].id].status == "solved" and again[first[3].id].priority == "urgent"
    assert again[created.id].tags == ["churn_risk"]


def test_raw_ticket_create_with_requester_object(small):
    sandbox = small[0]
    cred, base = sandbox.credentials["zendesk"], sandbox.urls["zendesk"]
    r = requests.post(f"{base}/api/v2/tickets.json", timeout=30,
                      auth=(f"{cred['email']}/token", cred["api_token"]),
                      json={"ticket": {"subject": "Hello", "comment": {"body": "Hi there", "public": False},
                                       "requester": {"name": "Nia New", "email": "nia@new.io"},
                                       "tags": "Renewal Q4"}})
    assert r.status_code == 201
    body = r.json()
    ticket, audit = body["ticket"], body["audit"]
    assert r.headers["Location"] == ticket["url"] == f"{base}/api/v2/tickets/{ticket['id']}.json"
    requester = sandbox.world.zendesk["users"][ticket["requester_id"]]
    assert requester["email"] == "nia@new.io" and requester["role"] == "end-user"
    assert ticket["tags"] == ["renewal", "q4"] and ticket["organization_id"] is None
    assert audit["ticket_id"] == ticket["id"] and audit["events"][0]["type"] == "Comment"
    assert audit["events"][0]["public"] is False
    assert {e["field_name"] for e in audit["events"][1:]} >= {"subject", "status", "requester_id"}


def test_ticket_validation_errors(small, monkeypatch):
    sandbox, _, user, _ = small
    zd = client(sandbox, monkeypatch)
    with pytest.raises(APIException) as exc:
        zd.tickets.create(Ticket(subject="No body"))
    assert exc.value.response.status_code == 422
    body = exc.value.response.json()
    assert body["error"] == "RecordInvalid" and body["description"] == "Record validation errors"
    assert body["details"]["base"][0]["error"] == "BlankValue"
    with pytest.raises(APIException) as exc:
        zd.tickets.create(Ticket(subject="x", comment=Comment(body="y"), priority="whenever"))
    assert "priority" in exc.value.response.json()["details"]
    tid = sorted(sandbox.world.zendesk["tickets"])[0]
    sandbox.world.zd_put("tickets", {"id": tid, "status": "closed"})
    closed = requests.put(f"{sandbox.urls['zendesk']}/api/v2/tickets/{tid}.json", json={"ticket": {"status": "open"}},
                          auth=(f"{sandbox.credentials['zendesk']['email']}/token",
                                sandbox.credentials["zendesk"]["api_token"]), timeout=30)
    assert closed.status_code == 422 and closed.json()["details"]["status"][0]["error"] == "ClosedPrevents"


def test_organization_create_update_and_duplicate_name(small, monkeypatch):
    sandbox, org, _, _ = small
    zd = client(sandbox, monkeypatch)
    created = zd.organizations.create(Organization(name="Globex", domain_names=["globex.io"]))
    assert created.id in sandbox.world.zendesk["organizations"] and created.domain_names == ["globex.io"]
    created.notes = "Key account"
    assert zd.organizations.update(created).notes == "Key account"
    with pytest.raises(APIException) as exc:
        zd.organizations.create(Organization(name="acme"))
    assert exc.value.response.status_code == 422
    assert exc.value.response.json()["details"]["name"][0]["error"] == "DuplicateValue"
    cred, url = sandbox.credentials["zendesk"], sandbox.urls["zendesk"] + "/api/v2/organizations.json"
    auth = (f"{cred['email']}/token", cred["api_token"])
    assert requests.post(url, data="{oops", auth=auth, timeout=30).status_code == 400
    assert requests.post(url, json={"org": {}}, auth=auth, timeout=30).status_code == 400


# -- auth, rate limits, faults, malformed requests ------------------------------------------------
def test_wrong_credentials_get_401_and_oauth_token_works(sb, monkeypatch):
    bad = client(sb, monkeypatch, token="not-the-token")
    with pytest.raises(APIException) as exc:
        bad.users.me()
    assert exc.value.response.status_code == 401
    assert exc.value.response.json() == {"error": "Couldn't authenticate you"}
    oauth = client(sb, monkeypatch, token=None, oauth_token=sb.credentials["zendesk"]["api_token"])
    assert oauth.users.me().role == "admin"
    assert requests.get(sb.urls["zendesk"] + "/api/v2/users/me.json", timeout=30).status_code == 401


def test_real_rate_limits_answer_429_with_retry_after(small, monkeypatch):
    sandbox = small[0]
    emu = sandbox.emulators["zendesk"]
    emu.knobs.rate_limits = "real"
    path = "/api/v2/incremental/tickets/cursor.json"
    for i in range(10):  # incremental exports: 10 requests a minute
        r = get(sandbox, path, start_time=unix(T0))
        assert r.status_code == 200
        assert r.headers["X-Rate-Limit"] == r.headers["ratelimit-limit"] == "700"
        assert int(r.headers["X-Rate-Limit-Remaining"]) == int(r.headers["ratelimit-remaining"]) == 700 - (i + 1)
        assert 1 <= int(r.headers["ratelimit-reset"]) <= 60
    limited = get(sandbox, path, start_time=unix(T0))
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"] == "APIRateLimitExceeded" and "X-Rate-Limit" in limited.headers
    assert get(sandbox, "/api/v2/users/me.json").status_code == 200  # the plan limit is not spent
    zd = client(sandbox, monkeypatch, ratelimit_budget=1)
    with pytest.raises(RatelimitBudgetExceeded):
        list(zd.tickets.incremental(start_time=unix(T0), paginate_by_time=False))


def test_injected_faults_use_zendesk_bodies(small):
    sandbox = small[0]
    knobs = sandbox.emulators["zendesk"].knobs
    knobs.throttle_rate = 1.0
    r = get(sandbox, "/api/v2/tickets.json")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert r.json()["error"] == "APIRateLimitExceeded"
    knobs.throttle_rate, knobs.error_rate = 0.0, 1.0
    r = get(sandbox, "/api/v2/tickets.json")
    assert r.status_code in (500, 502, 503) and set(r.json()) == {"error", "description"}
    knobs.error_rate = 0.0
    assert get(sandbox, "/api/v2/tickets.json").status_code == 200


def test_malformed_pagination_parameters(sb, zd):
    for size in ("500", "0", "abc"):
        r = get(sb, "/api/v2/organizations.json", **{"page[size]": size})
        assert r.status_code == 400 and r.json()["error"] == "InvalidPaginationParameter", size
    r = get(sb, "/api/v2/organizations.json", **{"page[size]": 10, "page[after]": "bm9wZQ"})
    assert r.status_code == 400
    with pytest.raises(APIException) as exc:
        list(zd.users(cursor_pagination=500))
    assert exc.value.response.status_code == 400
    assert get(sb, "/api/v2/users.json", page="zero").status_code == 400
    assert get(sb, "/api/v2/tickets.json", sort="subject", **{"page[size]": 10}).status_code == 400
    assert get(sb, "/api/v2/tickets/show_many.json", ids="1,two").status_code == 400


# -- a generated world ----------------------------------------------------------------------------
def test_generated_world_exports_and_lists(tmp_path, monkeypatch):
    from retention_hub.sandbox.generator import generate_world

    world = generate_world(accounts=200, seed=5, directory=tmp_path / "world")
    sandbox = server.start(world, tmp_path / "sb", vendors=("zendesk",))
    try:
        zd = client(sandbox, monkeypatch)
        tickets = list(zd.tickets.incremental(start_time=0, paginate_by_time=False, per_page=200,
                                              include=["metric_sets"]))
        assert len(tickets) == len({t.id for t in tickets}) == len(world.zendesk["tickets"])
        # the generator's tags (a cause's topic, escalation) come through as stored
        assert {t.id: t.tags for t in tickets} == {i: t["tags"] for i, t in world.zendesk["tickets"].items()}
        assert {"pricing", "data_export", "escalated"} <= {tag for t in tickets for tag in t.tags}
        body = get(sandbox, "/api/v2/incremental/tickets/cursor.json", start_time=0,
                   include="metric_sets").json()
        solved = {t["id"] for t in body["tickets"] if t["status"] == "solved"}
        assert solved and all(m["solved_at"] for m in body["metric_sets"] if m["ticket_id"] in solved)
        assert len(list(zd.organizations())) == len(world.zendesk["organizations"])
        assert len(list(zd.users())) == len(world.zendesk["users"])
        assert len(list(zd.satisfaction_ratings())) == len(world.zendesk["satisfaction_ratings"])
    finally:
        sandbox.stop()
