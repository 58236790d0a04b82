"""The HubSpot emulator driven by the official client, hubspot-api-client 12.

How the SDK is pointed at the sandbox: `HubSpot(access_token=..., host=url)`. Every keyword given to
`HubSpot(...)` lands in its config dict, and `DiscoveryBase._default_api_factory` copies each one
onto the generated sub-package's `Configuration` with `setattr`; `Configuration.host` is a property
whose setter replaces the base path (`https://api.hubapi.com`) and clears the server index. So one
`host=` reaches every sub-client (objects, companies, properties, owners, associations v3/v4).
The generated clients use urllib3, so these tests talk to a real local server, not to mocks.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import urllib3
from hubspot import HubSpot
from hubspot.crm.associations.v4 import ApiException as AssocApiException
from hubspot.crm.companies import ApiException as CompaniesApiException
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.contacts.exceptions import UnauthorizedException
from hubspot.crm.deals import ApiException as DealsApiException
from hubspot.crm.objects import ApiException as ObjectsApiException
from hubspot.crm.properties import ApiException as PropertiesApiException
from urllib3.util.retry import Retry

from retention_hub.sandbox import server
from retention_hub.sandbox.generator import generate_world
from retention_hub.sandbox.records import parse_time
from retention_hub.sandbox.world import World, hubspot_date_value

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
N_COMPANIES, N_CONTACTS = 450, 130
INDUSTRIES = ("COMPUTER_SOFTWARE", "FINANCIAL_SERVICES", "RETAIL")


def build_world() -> World:
    """A small hand-made portal: owners, 450 companies, contacts, deals, tickets and associations."""
    world = World(seed=1, anchor=ANCHOR)
    for n in range(1, 4):
        world.hs_owners[str(100 + n)] = {
            "id": str(100 + n), "email": f"csm{n}@sandbox.example.com", "firstName": f"Csm{n}",
            "lastName": "Owner", "userId": 9000 + n, "createdAt": "2025-01-01T00:00:00.000Z",
            "updatedAt": "2025-01-01T00:00:00.000Z", "archived": False, "teams": []}
    companies = [world.hs_put("companies", {
        "name": f"Company {i:03d}", "domain": f"c{i:03d}.example.com", "industry": INDUSTRIES[i % 3],
        "numberofemployees": str(10 + i), "lifecyclestage": "customer" if i % 4 else "other",
        "hubspot_owner_id": str(101 + i % 3), "country": "US"}, at=ANCHOR - timedelta(days=500 - i))["id"]
        for i in range(N_COMPANIES)]
    contacts = []
    for i in range(N_CONTACTS):
        rec = world.hs_put("contacts", {
            "email": f"person{i}@c{i % 10:03d}.example.com", "firstname": f"First{i}",
            "lastname": "Smith" if i % 2 else "Jones", "jobtitle": "VP Ops" if i % 5 == 0 else "Analyst",
            "hs_email_optout": "true" if i % 7 == 0 else "false",
            **({"phone": f"+1-555-{i:04d}"} if i % 3 == 0 else {})},
            at=ANCHOR - timedelta(days=N_CONTACTS - i, hours=i % 5))
        contacts.append(rec["id"])
        world.hs_associate("contacts", rec["id"], "companies", companies[i % 10])
    for i, amount in enumerate(("900", "1000", "25000", "150.5", "7000")):
        deal = world.hs_put("deals", {
            "dealname": f"Renewal {i}", "amount": amount, "pipeline": "default",
            "dealstage": "closedwon" if i % 2 else "contractsent", "dealtype": "existingbusiness",
            "closedate": f"2026-12-0{i + 1}T10:00:00.000Z"})
        world.hs_associate("deals", deal["id"], "companies", companies[i])
    world.hs_put("tickets", {"subject": "Login broken", "content": "Cannot log in", "hs_pipeline": "0",
                             "hs_pipeline_stage": "1", "hs_ticket_priority": "HIGH"})
    return world


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


@pytest.fixture(scope="module")
def sandbox(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.Sandbox]:
    sb = server.start(world, tmp_path_factory.mktemp("hubspot"), vendors=("hubspot",))
    yield sb
    sb.stop()


@pytest.fixture()
def hs(sandbox: server.Sandbox) -> HubSpot:
    return HubSpot(access_token=sandbox.credentials["hubspot"]["access_token"], host=sandbox.urls["hubspot"])


def raw(sandbox: server.Sandbox, method: str, path: str, body: Any = None, token: str | None = None,
        raw_body: bytes | None = None) -> urllib3.BaseHTTPResponse:
    """A plain HTTP call for what the SDK cannot send (bad JSON, unknown operators) or hides (headers)."""
    headers = {"Authorization": f"Bearer {token or sandbox.credentials['hubspot']['access_token']}",
               "Content-Type": "application/json"}
    data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
    return urllib3.request(method, sandbox.urls["hubspot"] + path, body=data, headers=headers)


def error_of(exc: Exception) -> dict[str, Any]:
    return json.loads(exc.body)  # type: ignore[attr-defined]


# -- configuration and listing ---------------------------------------------------------------------
def test_host_keyword_reaches_every_generated_client(hs: HubSpot, sandbox: server.Sandbox) -> None:
    url = sandbox.urls["hubspot"]
    for api in (hs.crm.companies.basic_api, hs.crm.objects.search_api, hs.crm.properties.core_api,
                hs.crm.owners.owners_api, hs.crm.associations.v4.basic_api):
        assert api.api_client.configuration.host == url


def test_list_pages_past_page_three_by_cursor(hs: HubSpot, sandbox: server.Sandbox) -> None:
    seen, pages, after = [], 0, None
    while True:
        page = hs.crm.companies.basic_api.get_page(limit=100, after=after, properties=["name", "industry"])
        pages += 1
        seen += [c.id for c in page.results]
        assert all(set(c.properties) == {"name", "industry", "createdate", "hs_lastmodifieddate",
                                         "hs_object_id"} for c in page.results)
        if page.paging is None:
            break
        assert page.paging.next.link.startswith(sandbox.urls["hubspot"] + "/crm/v3/objects/companies?")
        assert f"after={page.paging.next.after}" in page.paging.next.link
        after = page.paging.next.after
    assert pages == 5 and len(seen) == N_COMPANIES == len(set(seen))
    assert seen == sorted(seen, key=int)
    assert len(hs.crm.companies.get_all()) == N_COMPANIES  # the SDK's own pager
    # object type ids address the same objects
    assert [o.id for o in hs.crm.objects.basic_api.get_page("0-2", limit=3).results] == seen[:3]


def test_list_limit_over_100_and_bad_cursor_are_400(hs: HubSpot) -> None:
    with pytest.raises(CompaniesApiException) as exc:
        hs.crm.companies.basic_api.get_page(limit=101)
    assert exc.value.status == 400 and error_of(exc.value)["category"] == "VALIDATION_ERROR"
    with pytest.raises(CompaniesApiException) as exc:
        hs.crm.companies.basic_api.get_page(after="not-a-cursor")
    assert exc.value.status == 400


def test_default_properties_and_inline_associations(hs: HubSpot, world: World) -> None:
    contact = hs.crm.contacts.basic_api.get_page(limit=1, associations=["companies"]).results[0]
    assert set(contact.properties) == {"createdate", "email", "firstname", "hs_object_id", "lastmodifieddate",
                                       "lastname"}
    company_id = next(iter(world.hs_associations("contacts", contact.id, "companies")))
    assert [(a.id, a.type) for a in contact.associations["companies"].results] == \
        [(company_id, "contact_to_company")]
    deal = hs.crm.deals.basic_api.get_page(limit=1).results[0]
    assert set(deal.properties) == {"amount", "closedate", "createdate", "dealname", "dealstage",
                                    "hs_lastmodifieddate", "hs_object_id", "pipeline"}


# -- single-object CRUD ----------------------------------------------------------------------------
def test_create_read_update_archive_a_contact(hs: HubSpot, world: World) -> None:
    api = hs.crm.contacts.basic_api
    created = api.create({"properties": {"email": "New.Person@Example.com", "firstname": "New",
                                         "hs_email_optout": True}})
    assert created.properties["email"] == "New.Person@Example.com"
    assert created.properties["hs_email_optout"] == "true"
    assert world.hubspot["contacts"][created.id]["properties"]["firstname"] == "New"
    by_email = api.get_by_id("new.person@example.com", id_property="email", properties=["jobtitle"])
    assert by_email.id == created.id and by_email.properties["jobtitle"] is None
    before = world.hubspot["contacts"][created.id]["properties"]["hs_lastmodifieddate"]
    updated = api.update(created.id, {"properties": {"jobtitle": "CFO", "firstname": ""}})
    assert updated.properties["jobtitle"] == "CFO" and updated.properties["firstname"] is None
    assert updated.properties["lastmodifieddate"] >= before
    with pytest.raises(ContactsApiException) as exc:  # email is unique on contacts
        api.create({"properties": {"email": "new.person@example.com"}})
    assert exc.value.status == 409 and f"Existing ID: {created.id}" in error_of(exc.value)["message"]
    api.archive(created.id)
    with pytest.raises(ContactsApiException) as exc:
        api.get_by_id(created.id)
    assert exc.value.status == 404 and error_of(exc.value)["category"] == "OBJECT_NOT_FOUND"
    archived = api.get_by_id(created.id, archived=True)
    assert archived.archived and archived.archived_at is not None
    assert created.id in [c.id for c in api.get_page(archived=True, limit=100).results]
    with pytest.raises(ContactsApiException) as exc:
        api.get_by_id("abc")
    assert exc.value.status == 404 and error_of(exc.value)["context"] == {"id": ["abc"]}


def test_write_validation_follows_property_types(hs: HubSpot, sandbox: server.Sandbox) -> None:
    hs.crm.properties.core_api.create("deals", {
        "name": "rh_renewal_date", "label": "Renewal date", "type": "date", "fieldType": "date",
        "groupName": "dealinformation"})
    deals = hs.crm.deals.basic_api
    cases = {
        "PROPERTY_DOESNT_EXIST": {"no_such_property": "x"},
        "INVALID_DATE": {"rh_renewal_date": "1786334400000"},  # 2026-08-10T04:00Z, not midnight
        "INVALID_LONG": {"amount": "twelve"},
        "INVALID_OPTION": {"dealstage": "won-ish"},
        "READ_ONLY_VALUE": {"hs_object_id": "5"},
    }
    for code, properties in cases.items():
        with pytest.raises(DealsApiException) as exc:
            deals.create({"properties": {"dealname": "Bad", **properties}})
        body = error_of(exc.value)
        assert exc.value.status == 400 and body["category"] == "VALIDATION_ERROR", code
        assert body["message"].startswith("Property values were not valid: [")
        results = json.loads(body["message"].split(": ", 1)[1])
        assert [(r["error"], r["name"]) for r in results] == [(code, next(iter(properties)))]
        assert body["errors"][0]["code"] == code
    midnight = hubspot_date_value(datetime(2026, 8, 10, 15, tzinfo=timezone.utc))
    ok = deals.create({"properties": {"dealname": "Good", "rh_renewal_date": "2026-08-10", "amount": 12}})
    assert ok.properties["rh_renewal_date"] == midnight and ok.properties["amount"] == "12"
    assert "4:0:0.0 UTC, not midnight!" in raw(sandbox, "PATCH", f"/crm/v3/objects/deals/{ok.id}", {
        "properties": {"rh_renewal_date": 1786334400000}}).data.decode()


# -- batch -----------------------------------------------------------------------------------------
def test_batch_read_reports_missing_ids_with_207(hs: HubSpot, world: World) -> None:
    ids = list(world.hubspot["companies"])[:3]
    reply = hs.crm.companies.batch_api.read({"inputs": [{"id": i} for i in ids] + [{"id": "42"}],
                                             "properties": ["domain"], "propertiesWithHistory": []})
    assert reply.status == "COMPLETE" and sorted(r.id for r in reply.results) == sorted(ids)
    assert reply.num_errors == 1 and reply.errors[0].category == "OBJECT_NOT_FOUND"
    assert reply.errors[0].context == {"ids": ["42"]}
    assert "COMPANY objects" in reply.errors[0].message
    by_domain = hs.crm.companies.batch_api.read({"inputs": [{"id": "C001.example.com"}], "idProperty": "domain",
                                                 "properties": [], "propertiesWithHistory": []})
    assert [r.properties["name"] for r in by_domain.results] == ["Company 001"]


def test_batch_create_update_upsert_and_archive(hs: HubSpot, world: World) -> None:
    batch = hs.crm.contacts.batch_api
    created = batch.create({"inputs": [{"properties": {"email": f"b{i}@batch.example.com", "lastname": "Batch"}}
                                       for i in range(3)]})
    assert created.status == "COMPLETE" and len(created.results) == 3
    ids = [c.id for c in created.results]
    updated = batch.update({"inputs": [{"id": ids[0], "properties": {"jobtitle": "Lead"}},
                                       {"id": "999", "properties": {"jobtitle": "Ghost"}}]})
    assert [r.id for r in updated.results] == [ids[0]] and updated.num_errors == 1
    assert updated.errors[0].context == {"ids": ["999"]}
    assert world.hubspot["contacts"][ids[0]]["properties"]["jobtitle"] == "Lead"
    upserted = batch.upsert({"inputs": [
        {"id": "b1@batch.example.com", "idProperty": "email", "properties": {"jobtitle": "Upserted"}},
        {"id": "fresh@batch.example.com", "idProperty": "email", "properties": {"lastname": "Fresh"}}]})
    flags = {r.properties["email"]: r.new for r in upserted.results}
    assert flags == {"b1@batch.example.com": False, "fresh@batch.example.com": True}
    assert world.hubspot["contacts"][ids[1]]["properties"]["jobtitle"] == "Upserted"
    with pytest.raises(ContactsApiException) as exc:  # one bad input fails a plain batch create
        batch.create({"inputs": [{"properties": {"lastname": "Ok"}}, {"properties": {"bogus": "1"}}]})
    assert exc.value.status == 400 and "PROPERTY_DOESNT_EXIST" in error_of(exc.value)["message"]
    multi = batch.create({"inputs": [  # ... unless every input carries an objectWriteTraceId
        {"properties": {"lastname": "Traced"}, "objectWriteTraceId": "t1"},
        {"properties": {"bogus": "1"}, "objectWriteTraceId": "t2"}]})
    assert len(multi.results) == 1 and multi.errors[0].context == {"objectWriteTraceId": ["t2"]}
    batch.archive({"inputs": [{"id": i} for i in ids]})
    assert all(world.hubspot["contacts"][i]["archived"] for i in ids)


def test_batch_of_more_than_100_inputs_is_400(hs: HubSpot) -> None:
    with pytest.raises(CompaniesApiException) as exc:
        hs.crm.companies.batch_api.read({"inputs": [{"id": str(i)} for i in range(101)],
                                         "properties": [], "propertiesWithHistory": []})
    assert exc.value.status == 400 and "maximum number of inputs" in error_of(exc.value)["message"]
    with pytest.raises(ContactsApiException) as exc:
        hs.crm.contacts.batch_api.update({"inputs": [{"id": "1", "properties": {}}, {"id": "1", "properties": {}}]})
    assert "Duplicate IDs" in error_of(exc.value)["message"]


# -- search ----------------------------------------------------------------------------------------
def _search(hs: HubSpot, object_type: str, filters: list[dict], **kw: Any) -> Any:
    return hs.crm.objects.search_api.do_search(object_type, {"filterGroups": [{"filters": filters}], **kw})


def test_search_filters_sorts_and_pages_past_page_three(hs: HubSpot, world: World) -> None:
    since = ANCHOR - timedelta(days=100)
    want = sorted((r for r in world.hubspot["contacts"].values() if not r["archived"]
                   and r["properties"]["createdate"] >= since.strftime("%Y-%m-%dT%H:%M:%S.000Z")
                   and r["properties"]["lastname"] == "Smith"),
                  key=lambda r: r["properties"]["createdate"], reverse=True)
    got, after, pages = [], None, 0
    while True:
        body = {"filterGroups": [{"filters": [
                    {"propertyName": "createdate", "operator": "GTE", "value": str(int(since.timestamp() * 1000))},
                    {"propertyName": "lastname", "operator": "EQ", "value": "smith"}]}],
                "sorts": [{"propertyName": "createdate", "direction": "DESCENDING"}],
                "properties": ["lastname"], "limit": 10, **({"after": after} if after else {})}
        page = hs.crm.contacts.search_api.do_search(body)
        pages += 1
        assert page.total == len(want)
        got += page.results
        if page.paging is None:
            break
        after = page.paging.next.after
    assert pages > 3 and [r.id for r in got] == [r["id"] for r in want]
    assert set(got[0].properties) == {"lastname", "createdate", "lastmodifieddate", "hs_object_id"}
    # an ISO datetime filter value selects the same records as epoch millis
    iso = _search(hs, "contacts", [{"propertyName": "createdate", "operator": "GTE", "value": since.isoformat()},
                                   {"propertyName": "lastname", "operator": "EQ", "value": "Smith"}], limit=200)
    assert iso.total == len(want)


def test_search_operators(hs: HubSpot) -> None:
    def ids(object_type: str, *filters: dict, **kw: Any) -> list[str]:
        renewals = {"propertyName": "dealname", "operator": "CONTAINS_TOKEN", "value": "renewal"}
        return [r.properties["dealname"]
                for r in _search(hs, object_type, [renewals, *filters], limit=200, **kw).results]

    # numbers compare numerically ("900" < "1000"), not as text
    assert ids("deals", {"propertyName": "amount", "operator": "LT", "value": "1000"}) == ["Renewal 0", "Renewal 3"]
    assert ids("deals", {"propertyName": "amount", "operator": "BETWEEN", "value": "900", "highValue": "7000"}) \
        == ["Renewal 0", "Renewal 1", "Renewal 4"]
    assert ids("deals", {"propertyName": "dealstage", "operator": "IN", "values": ["closedwon"]}) \
        == ["Renewal 1", "Renewal 3"]
    assert ids("deals", {"propertyName": "dealstage", "operator": "NOT_IN", "values": ["closedwon"]},
               {"propertyName": "closedate", "operator": "LTE", "value": "2026-12-03T10:00:00Z"}) \
        == ["Renewal 0", "Renewal 2"]
    assert ids("deals", {"propertyName": "dealstage", "operator": "NEQ", "value": "contractsent"},
               sorts=[{"propertyName": "amount", "direction": "DESCENDING"}]) == ["Renewal 1", "Renewal 3"]
    phones = _search(hs, "contacts", [{"propertyName": "phone", "operator": "HAS_PROPERTY"}], limit=1)
    no_phones = _search(hs, "contacts", [{"propertyName": "phone", "operator": "NOT_HAS_PROPERTY"}], limit=1)
    live = hs.crm.contacts.search_api.do_search({"limit": 1}).total
    assert phones.total == 44 and phones.total + no_phones.total == live
    vps = _search(hs, "contacts", [{"propertyName": "jobtitle", "operator": "CONTAINS_TOKEN", "value": "vp"}])
    assert vps.total == 26
    domain = _search(hs, "contacts", [{"propertyName": "email", "operator": "CONTAINS_TOKEN",
                                       "value": "*@c003.example.com"}])
    assert domain.total == 13
    either = hs.crm.contacts.search_api.do_search({"filterGroups": [
        {"filters": [{"propertyName": "email", "operator": "EQ", "value": "person1@c001.example.com"}]},
        {"filters": [{"propertyName": "email", "operator": "EQ", "value": "person2@c002.example.com"}]}]})
    assert either.total == 2  # groups are OR-ed
    groups = [{"filters": [{"propertyName": "email", "operator": "EQ", "value": f"person{i}@c00{i}.example.com"}]}
              for i in (1, 2)]
    one = hs.crm.contacts.search_api.do_search({"filterGroups": groups, "limit": 1})
    assert one.paging.next.after == "1"
    two = hs.crm.contacts.search_api.do_search({"filterGroups": groups, "limit": 1, "after": "1"})
    assert two.paging is None and [one.results[0].id, two.results[0].id] == [r.id for r in either.results]
    # NEQ keeps records that have no value at all (only contact 0 has this phone)
    not_this = _search(hs, "contacts", [{"propertyName": "phone", "operator": "NEQ", "value": "+1-555-0000"}])
    assert not_this.total == live - 1
    assert hs.crm.companies.search_api.do_search({"query": "company 04"}).total == 10


def test_search_caps_and_10000_window(tmp_path: Path) -> None:
    big = World(seed=2, anchor=ANCHOR)
    for i in range(10_050):  # hs_put is cheap; a world beyond the search window in ~0.1 s
        big.hs_put("contacts", {"email": f"u{i}@big.example.com", "lastname": "Big"})
    sb = server.start(big, tmp_path, vendors=("hubspot",))
    try:
        client = HubSpot(access_token=sb.credentials["hubspot"]["access_token"], host=sb.urls["hubspot"])
        search = client.crm.contacts.search_api.do_search
        filters = [{"filters": [{"propertyName": "lastname", "operator": "EQ", "value": "Big"}]}]
        first = search({"filterGroups": filters, "limit": 200})
        assert first.total == 10_050 and first.paging.next.after == "200"
        last = search({"filterGroups": filters, "limit": 200, "after": "9800"})
        assert len(last.results) == 200 and last.paging.next.after == "10000"
        with pytest.raises(ContactsApiException) as exc:
            search({"filterGroups": filters, "limit": 200, "after": last.paging.next.after})
        assert exc.value.status == 400 and "10,000" in error_of(exc.value)["message"]
        with pytest.raises(ContactsApiException) as exc:
            search({"limit": 201})
        assert exc.value.status == 400
        with pytest.raises(ContactsApiException) as exc:  # at most five filter groups
            search({"filterGroups": filters * 6})
        assert exc.value.status == 400 and "filter groups" in error_of(exc.value)["message"]
    finally:
        sb.stop()


def test_malformed_requests_get_hubspots_400(sandbox: server.Sandbox) -> None:
    bad_json = raw(sandbox, "POST", "/crm/v3/objects/contacts/search", raw_body=b"{not json")
    body = json.loads(bad_json.data)
    assert bad_json.status == 400 and body["status"] == "error"
    assert body["message"].startswith("Invalid input JSON on line 1, column 2")
    unknown_op = raw(sandbox, "POST", "/crm/v3/objects/contacts/search", {
        "filterGroups": [{"filters": [{"propertyName": "email", "operator": "LIKE", "value": "x"}]}]})
    assert unknown_op.status == 400
    assert 'from String "LIKE": not one of the values accepted' in json.loads(unknown_op.data)["message"]
    unknown_type = raw(sandbox, "GET", "/crm/v3/objects/widgets")
    assert unknown_type.status == 400 and "Unable to infer object type" in json.loads(unknown_type.data)["message"]
    not_list = raw(sandbox, "POST", "/crm/v3/objects/contacts/batch/read", {"inputs": "1,2"})
    assert not_list.status == 400 and json.loads(not_list.data)["category"] == "VALIDATION_ERROR"


# -- properties and owners -------------------------------------------------------------------------
def test_property_definitions_groups_and_create(hs: HubSpot, world: World) -> None:
    core = hs.crm.properties.core_api
    deal_props = {p.name: p for p in core.get_all("deals").results}
    assert (deal_props["amount"].type, deal_props["amount"].field_type) == ("number", "number")
    assert (deal_props["closedate"].type, deal_props["closedate"].field_type) == ("datetime", "date")
    stages = [o.value for o in deal_props["dealstage"].options]
    assert deal_props["dealstage"].type == "enumeration" and {"closedwon", "contractsent"} <= set(stages)
    optout = core.get_by_name("contacts", "hs_email_optout")
    assert (optout.type, optout.field_type) == ("bool", "booleancheckbox")
    owner = core.get_by_name("companies", "hubspot_owner_id")
    assert {o.value for o in owner.options} == set(world.hs_owners)
    industries = {o.value for o in core.get_by_name("companies", "industry").options}
    assert set(INDUSTRIES) <= industries
    group = hs.crm.properties.groups_api.create("companies", {"name": "retention_hub", "label": "Retention Hub"})
    assert group.name == "retention_hub" and not group.archived
    created = core.create("companies", {"name": "rh_health_score", "label": "Health score", "type": "number",
                                        "fieldType": "number", "groupName": "retention_hub"})
    assert created.group_name == "retention_hub" and not created.hubspot_defined
    assert "rh_health_score" in world.hs_custom_properties["companies"]
    assert "rh_health_score" in {p.name for p in core.get_all("companies").results}
    with pytest.raises(PropertiesApiException) as exc:
        core.create("companies", {"name": "rh_health_score", "label": "Again", "type": "number",
                                  "fieldType": "number", "groupName": "retention_hub"})
    assert exc.value.status == 409 and error_of(exc.value)["category"] == "OBJECT_ALREADY_EXISTS"
    with pytest.raises(PropertiesApiException) as exc:
        core.create("companies", {"name": "rh_other", "label": "Other", "type": "string", "fieldType": "text",
                                  "groupName": "no_such_group"})
    assert exc.value.status == 400
    with pytest.raises(PropertiesApiException) as exc:
        core.get_by_name("companies", "missing_prop")
    assert exc.value.status == 404
    company = next(iter(world.hubspot["companies"]))
    hs.crm.companies.basic_api.update(company, {"properties": {"rh_health_score": "72.5"}})
    assert world.hubspot["companies"][company]["properties"]["rh_health_score"] == "72.5"
    core.update("companies", "rh_health_score", {"label": "Health (0-100)"})
    assert core.get_by_name("companies", "rh_health_score").label == "Health (0-100)"
    core.archive("companies", "rh_health_score")
    assert "rh_health_score" not in {p.name for p in core.get_all("companies").results}
    assert [p.name for p in core.get_all("companies", archived=True).results] == ["rh_health_score"]
    with pytest.raises(CompaniesApiException) as exc:  # an archived property takes no more values
        hs.crm.companies.basic_api.update(company, {"properties": {"rh_health_score": "80"}})
    assert "PROPERTY_DOESNT_EXIST" in error_of(exc.value)["message"]


def test_owners(hs: HubSpot, sandbox: server.Sandbox) -> None:
    owners = hs.crm.owners.owners_api
    first = owners.get_page(limit=2)
    assert [o.id for o in first.results] == ["101", "102"] and first.paging.next.after == "103"
    assert [o.id for o in owners.get_page(after=first.paging.next.after).results] == ["103"]
    assert [o.id for o in owners.get_page(email="CSM2@sandbox.example.com").results] == ["102"]
    assert owners.get_by_id(103).email == "csm3@sandbox.example.com"
    assert [o["id"] for o in json.loads(raw(sandbox, "GET", "/crm/v3/owners?limit=5").data)["results"]] \
        == ["101", "102", "103"]  # the SDK calls /crm/v3/owners/; the path without the slash works too
    assert owners.get_by_id(9001, id_property="userId").id == "101"
    with pytest.raises(Exception) as exc:
        owners.get_by_id(555)
    assert exc.value.status == 404  # type: ignore[attr-defined]


# -- associations ----------------------------------------------------------------------------------
def test_associations_v4_read_and_batch_read(hs: HubSpot, world: World) -> None:
    company = list(world.hubspot["companies"])[3]
    contacts = sorted((c for c, _ in world.hs_associations("companies", company, "contacts").items()), key=int)
    v4 = hs.crm.associations.v4
    page = v4.basic_api.get_page("companies", company, "contacts", limit=5)
    assert [p.to_object_id for p in page.results] == contacts[:5]
    assert page.results[0].association_types[0].type_id == 280
    rest = v4.basic_api.get_page("companies", company, "contacts", after=page.paging.next.after, limit=500)
    assert [p.to_object_id for p in page.results + rest.results] == contacts
    lonely = list(world.hubspot["companies"])[400]
    batch = v4.batch_api.get_page("companies", "contacts", {"inputs": [{"id": company}, {"id": lonely}]})
    assert [r._from.id for r in batch.results] == [company]
    assert len(batch.results[0].to) == len(contacts)
    assert batch.errors[0].sub_category == "crm.associations.NO_ASSOCIATIONS_FOUND"
    assert batch.errors[0].context["fromObjectId"] == [lonely]
    v3 = hs.crm.associations.batch_api.read("contacts", "companies", {"inputs": [{"id": contacts[0]}]})
    assert [(t.id, t.type) for t in v3.results[0].to] == [(company, "contact_to_company")]


def test_task_created_with_inline_associations(hs: HubSpot, world: World) -> None:
    company = list(world.hubspot["companies"])[7]
    due = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    task = hs.crm.objects.basic_api.create("tasks", {
        "properties": {"hs_task_subject": "Renewal call", "hs_task_status": "NOT_STARTED",
                       "hs_task_priority": "HIGH", "hs_timestamp": str(int(due.timestamp() * 1000)),
                       "hubspot_owner_id": "102"},
        "associations": [{"to": {"id": company},
                          "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}]}]})
    assert task.properties["hs_timestamp"] == "2026-11-20T09:00:00.000Z"
    assert world.hs_associations("tasks", task.id, "companies") == {company: {192}}
    assert world.hs_associations("companies", company, "tasks") == {task.id: {191}}
    back = hs.crm.companies.basic_api.get_by_id(company, associations=["tasks"])
    assert [a.id for a in back.associations["tasks"].results] == [task.id]
    with pytest.raises(ObjectsApiException) as exc:  # an owner that does not exist is not an option
        hs.crm.objects.basic_api.create("tasks", {"properties": {"hs_task_subject": "x", "hubspot_owner_id": "9"}})
    assert "INVALID_OPTION" in error_of(exc.value)["message"]
    with pytest.raises(ObjectsApiException) as exc:  # the company must exist
        hs.crm.objects.basic_api.create("tasks", {"properties": {"hs_task_subject": "x"}, "associations": [
            {"to": {"id": "12345"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}]}]})
    assert exc.value.status == 400


def test_parent_child_companies_and_default_associations(hs: HubSpot, world: World) -> None:
    parent, child, other = list(world.hubspot["companies"])[20:23]
    v4 = hs.crm.associations.v4
    labeled = v4.basic_api.create("companies", parent, "companies", child,
                                  [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 13}])
    assert labeled.labels == ["Child Company"] and labeled.to_object_id == child
    up = v4.basic_api.get_page("companies", child, "companies")
    assert [(r.to_object_id, [t.type_id for t in r.association_types]) for r in up.results] == [(parent, [14])]
    deal = next(iter(world.hubspot["deals"]))
    default = v4.basic_api.create_default("deals", deal, "companies", other)
    assert {(r._from.id, r.association_spec.association_type_id) for r in default.results} == \
        {(deal, 341), (other, 342)}
    v4.basic_api.archive("deals", deal, "companies", other)
    assert other not in world.hs_associations("deals", deal, "companies")
    with pytest.raises(AssocApiException) as exc:
        v4.basic_api.create("companies", parent, "contacts", child,
                            [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 13}])
    assert exc.value.status == 400


# -- auth and rate limits --------------------------------------------------------------------------
def test_wrong_token_is_401(sandbox: server.Sandbox) -> None:
    client = HubSpot(access_token="pat-na1-00000000-wrong", host=sandbox.urls["hubspot"])
    with pytest.raises(UnauthorizedException) as exc:
        client.crm.contacts.basic_api.get_page()
    assert exc.value.status == 401 and isinstance(exc.value, ContactsApiException)
    assert error_of(exc.value)["category"] == "INVALID_AUTHENTICATION"


def test_rate_limit_headers_and_429(hs: HubSpot, sandbox: server.Sandbox) -> None:
    listed = raw(sandbox, "GET", "/crm/v3/objects/companies?limit=1")
    assert listed.headers["X-HubSpot-RateLimit-Max"] == "190"
    assert listed.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert int(listed.headers["X-HubSpot-RateLimit-Daily-Remaining"]) < 625_000
    searched = raw(sandbox, "POST", "/crm/v3/objects/companies/search", {"limit": 1})
    assert searched.status == 200 and "X-HubSpot-RateLimit-Max" not in searched.headers
    emulator = sandbox.emulators["hubspot"]
    emulator.knobs.rate_limits = "real"
    try:
        statuses = [raw(sandbox, "POST", "/crm/v3/objects/deals/search", {"limit": 1}).status for _ in range(6)]
        assert statuses.count(429) >= 1 and statuses[:5].count(200) >= 4  # five searches per second
        with pytest.raises(ObjectsApiException) as exc:
            hs.crm.objects.search_api.do_search("deals", {"limit": 1})
        assert exc.value.status == 429 and error_of(exc.value)["policyName"] == "SECONDLY"
        listed = raw(sandbox, "GET", "/crm/v3/objects/companies?limit=1")
        remaining = int(listed.headers["X-HubSpot-RateLimit-Remaining"])
        assert listed.status == 200 and remaining < 190  # the ten-second window counts this call
    finally:
        emulator.knobs.rate_limits = "off"
    emulator.knobs.throttle_rate = 1.0
    try:
        with pytest.raises(CompaniesApiException) as exc:
            hs.crm.companies.basic_api.get_page()
        assert exc.value.status == 429
        assert exc.value.headers["X-HubSpot-RateLimit-Max"] == "190"
        assert error_of(exc.value) | {"correlationId": "-"} == {
            "status": "error", "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT", "correlationId": "-", "policyName": "TEN_SECONDLY_ROLLING"}
        # With retry= the SDK hands urllib3 a Retry; once it is exhausted urllib3 raises MaxRetryError
        # instead of the SDK's ApiException, so callers must catch both.
        retrying = HubSpot(access_token=sandbox.credentials["hubspot"]["access_token"], host=sandbox.urls["hubspot"],
                           retry=Retry(total=2, status_forcelist=[429], backoff_factor=0))
        with pytest.raises(urllib3.exceptions.MaxRetryError):
            retrying.crm.companies.basic_api.get_page()
    finally:
        emulator.knobs.throttle_rate = 0.0
    assert hs.crm.companies.basic_api.get_page(limit=1).results


# -- a generated world -----------------------------------------------------------------------------
def _millis(value: str) -> int:
    return int(value) if value.isdigit() else int(parse_time(value).timestamp() * 1000)


def test_against_a_generated_world(tmp_path: Path) -> None:
    world = generate_world(200, seed=5, directory=tmp_path / "world", anchor=ANCHOR)
    sb = server.start(world, tmp_path / "sandbox", vendors=("hubspot",))
    try:
        client = HubSpot(access_token=sb.credentials["hubspot"]["access_token"], host=sb.urls["hubspot"])
        companies = {i: r for i, r in world.hubspot["companies"].items() if not r["archived"]}
        listed = client.crm.companies.get_all(properties=["industry", "hubspot_owner_id"])
        assert {c.id for c in listed} == set(companies)
        # the portal's options cover every value its records hold, and every owner id resolves
        industries = {o.value for o in client.crm.properties.core_api.get_by_name("companies", "industry").options}
        assert {c.properties["industry"] for c in listed if c.properties["industry"]} <= industries
        owners = {o.id for o in client.crm.owners.owners_api.get_page(limit=500).results}
        assert {c.properties["hubspot_owner_id"] for c in listed} <= owners
        # deals closing from the anchor on, by close date: datetimes come back as ISO whatever their storage
        since = int(ANCHOR.timestamp() * 1000)
        want = sorted((i for i, r in world.hubspot["deals"].items() if not r["archived"]
                       and r["properties"].get("closedate") and _millis(r["properties"]["closedate"]) >= since),
                      key=lambda i: (_millis(world.hubspot["deals"][i]["properties"]["closedate"]), int(i)))
        found = client.crm.deals.search_api.do_search({
            "filterGroups": [{"filters": [{"propertyName": "closedate", "operator": "GTE", "value": ANCHOR.isoformat()}]}],
            "sorts": [{"propertyName": "closedate", "direction": "ASCENDING"}], "properties": ["closedate"],
            "limit": 200})
        assert want and [d.id for d in found.results] == want and found.total == len(want)
        assert all(d.properties["closedate"].endswith("Z") for d in found.results)
        # company -> contact links read in one v4 batch match the world's associations
        sample = sorted(companies, key=int)[:60]
        batch = client.crm.associations.v4.batch_api.get_page(
            "companies", "contacts", {"inputs": [{"id": i} for i in sample]})
        got = {r._from.id: sorted(t.to_object_id for t in r.to) for r in batch.results}
        expected = {i: sorted(c for c, types in world.hs_associations("companies", i, "contacts").items()
                              if types and not world.hubspot["contacts"][c]["archived"]) for i in sample}
        assert got == {i: v for i, v in expected.items() if v}
        # a renewal task written back for a generated company, owned by its CSM
        company = sample[0]
        task = client.crm.objects.basic_api.create("tasks", {
            "properties": {"hs_task_subject": "Renewal risk review", "hs_timestamp": ANCHOR.isoformat(),
                           "hubspot_owner_id": companies[company]["properties"]["hubspot_owner_id"]},
            "associations": [{"to": {"id": company}, "types": [
                {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}]}]})
        assert task.id in world.hs_associations("companies", company, "tasks")
    finally:
        sb.stop()
