"""Prove a running sandbox answers the four official SDKs, using only what sandbox.json says.

This is what `rhub demo` runs until the connectors exist: one small read through each SDK exactly as
a third-party client would make it (only the base URL differs from the real vendor).
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import requests


def salesforce_client(info: dict[str, Any]) -> Any:
    from simple_salesforce import Salesforce

    session = requests.Session()
    session.verify = info["ca_cert"]
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override `verify`
    return Salesforce(instance_url=info["instance_url"], session_id=info["access_token"], session=session)


def hubspot_client(info: dict[str, Any]) -> Any:
    from hubspot import HubSpot

    return HubSpot(access_token=info["access_token"], host=info["base_url"])


def zendesk_client(info: dict[str, Any]) -> Any:
    from zenpy import Zenpy

    # zenpy reads these on every request to build its URLs
    netloc = urlsplit(info["base_url"])
    os.environ["ZENPY_FORCE_SCHEME"] = netloc.scheme
    os.environ["ZENPY_FORCE_NETLOC"] = netloc.netloc
    return Zenpy(subdomain=info["subdomain"], email=info["email"], token=info["api_token"])


def stripe_client(info: dict[str, Any]) -> Any:
    import stripe

    return stripe.StripeClient(info["api_key"], base_addresses={"api": info["base_url"]})


def smoke(info: dict[str, Any]) -> dict[str, str]:
    """One read per SDK; returns a line of what each answered."""
    out: dict[str, str] = {}
    sf = salesforce_client(info["salesforce"])
    accounts = sf.query("SELECT COUNT() FROM Account")["totalSize"]
    page = sf.query("SELECT Id, Name, Website, SystemModstamp FROM Account ORDER BY SystemModstamp DESC LIMIT 3")
    out["salesforce"] = f"{accounts} accounts; latest: {', '.join(r['Name'] for r in page['records'])}"

    hs = hubspot_client(info["hubspot"])
    companies = hs.crm.companies.basic_api.get_page(limit=3, properties=["name", "domain"])
    out["hubspot"] = "first companies: " + ", ".join(c.properties.get("name") or "?" for c in companies.results)

    zd = zendesk_client(info["zendesk"])
    orgs = []
    for org in zd.organizations():
        orgs.append(org.name)
        if len(orgs) == 3:
            break
    out["zendesk"] = "first organizations: " + ", ".join(orgs)

    st = stripe_client(info["stripe"])
    subs = st.v1.subscriptions.list(params={"limit": 3, "status": "all"})
    out["stripe"] = "latest subscriptions: " + ", ".join(f"{s.id} ({s.status})" for s in subs.data)
    return out
