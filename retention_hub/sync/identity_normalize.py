"""Identity inputs: normalised names, domains and countries, and the frames the matcher works on.

`account_frame` holds one row per account-level record (position = row number, in the store's
(source, source_id) order), `contact_frame` one per contact, `domain_frame` every (record, domain)
with where the domain was seen: "site" (website, HubSpot domain, Zendesk domain names, warehouse
domain) or "email" (a Stripe billing e-mail, or the domain most of an account's contacts use).
Free-mail and shared providers never count as a company's domain.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz import process
from rapidfuzz.distance import OSA

LEGAL_SUFFIXES = frozenset(
    "inc incorporated llc llp lp ltd limited gmbh mbh pty plc ag bv nv sa sas sarl sl srl spa ab as oy corp "
    "corporation kk kg".split())
BUILTIN_FREE_MAIL = frozenset(
    "gmail.com googlemail.com yahoo.com yahoo.co.uk yahoo.fr yahoo.de ymail.com outlook.com hotmail.com "
    "hotmail.co.uk hotmail.fr live.com msn.com icloud.com me.com mac.com aol.com proton.me protonmail.com "
    "pm.me gmx.com gmx.de gmx.net web.de t-online.de mail.com email.com yandex.ru yandex.com mail.ru zoho.com "
    "qq.com 163.com 126.com sina.com naver.com fastmail.com hey.com tutanota.com orange.fr free.fr "
    "laposte.net libero.it btinternet.com comcast.net verizon.net att.net sbcglobal.net example.com".split())
COUNTRY_ALIASES = {
    "USA": "US", "UNITED STATES": "US", "UNITED STATES OF AMERICA": "US", "U S A": "US", "U S": "US",
    "UK": "GB", "UNITED KINGDOM": "GB", "GREAT BRITAIN": "GB", "ENGLAND": "GB", "SCOTLAND": "GB",
    "GERMANY": "DE", "DEUTSCHLAND": "DE", "FRANCE": "FR", "CANADA": "CA", "NETHERLANDS": "NL",
    "THE NETHERLANDS": "NL", "HOLLAND": "NL", "AUSTRALIA": "AU", "SPAIN": "ES", "ESPANA": "ES",
    "SWEDEN": "SE", "SVERIGE": "SE", "IRELAND": "IE", "ITALY": "IT", "SWITZERLAND": "CH", "AUSTRIA": "AT",
    "BELGIUM": "BE", "DENMARK": "DK", "NORWAY": "NO", "FINLAND": "FI", "POLAND": "PL", "PORTUGAL": "PT",
    "JAPAN": "JP", "INDIA": "IN", "BRAZIL": "BR", "MEXICO": "MX", "SINGAPORE": "SG", "NEW ZEALAND": "NZ"}

_PUNCT = re.compile(r"[^\w\s]")
_ASCII_PUNCT = str.maketrans({**{c: " " for c in "!\"#$%'()*+,-/:;<=>?@[\\]^_`{|}~"}, ".": None, "&": " and "})
# a legal suffix glued to the word before it by a dropped space ("IndustriesInc")
_GLUED_SUFFIX = re.compile(r"(?<=[a-z])(Inc|LLC|Llc|Ltd|GmbH|Gmbh|Corp|PLC|Plc|BV|SAS|AB|AG)\b")
_GLUED_ENDINGS = ("Inc", "LLC", "Llc", "Ltd", "GmbH", "Gmbh", "Corp", "PLC", "Plc", "BV", "SAS", "AB", "AG")
_TYPO_SUFFIXES = tuple(s for s in LEGAL_SUFFIXES if len(s) >= 3)
_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*"((?:[^"\\]|\\.)*)"')


@lru_cache(maxsize=4096)
def _legal_suffix(token: str) -> bool:
    """A legal form, also when mistyped by one letter ("Inc" as "nc", "Ltd" as "Ldt")."""
    if token in LEGAL_SUFFIXES:
        return True
    return 2 <= len(token) <= 7 and process.extractOne(token, _TYPO_SUFFIXES, scorer=OSA.distance,
                                                       score_cutoff=1) is not None


@lru_cache(maxsize=1 << 18)
def normalize_name(value: Any) -> str | None:
    """Case-folded, accents and punctuation removed, trailing legal suffixes dropped ("Acme, Inc." -> "acme")."""
    if not isinstance(value, str):
        return None
    if value.rstrip(" .").endswith(_GLUED_ENDINGS):  # the regex only where it can match: it is slow
        value = _GLUED_SUFFIX.sub(r" \1", value)
    text = value.casefold()
    if text.isascii():
        text = text.translate(_ASCII_PUNCT)
    else:
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
        text = _PUNCT.sub(" ", text.replace(".", "").replace("&", " and ")).replace("_", " ")
    tokens = text.split()
    while len(tokens) > 1 and _legal_suffix(tokens[-1]):
        tokens.pop()
    return " ".join(tokens) or None


@lru_cache(maxsize=1 << 18)
def normalize_domain(value: Any) -> str | None:
    """A bare host name from a website, URL or domain ("https://www.Acme.com/x" -> "acme.com")."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    text = text.strip(".").removeprefix("www.")
    return text if "." in text and " " not in text else None


def email_domain(value: Any, free_mail: frozenset[str]) -> str | None:
    """The company domain of an e-mail address; None for free-mail and shared providers."""
    if not isinstance(value, str) or "@" not in value:
        return None
    domain = normalize_domain(value.rsplit("@", 1)[1])
    return None if domain is None or domain in free_mail else domain


@lru_cache(maxsize=4096)
def normalize_country(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = " ".join(_PUNCT.sub(" ", value.upper()).split())
    return COUNTRY_ALIASES.get(text, text)


def free_mail_domains(extra: Iterable[str] = ()) -> frozenset[str]:
    return BUILTIN_FREE_MAIL | {d.strip().lower() for d in extra}


def external_ids(text: Any) -> dict[str, str] | None:
    """A record's `external_ids` ({system: id}) from the JSON text the store hands back."""
    if text is None or isinstance(text, dict):
        return text or None
    if text in ("", "{}"):
        return None
    if "\\" not in text:  # the usual flat {"system":"id"}: no JSON parser needed
        pairs = dict(_PAIR.findall(text))
        if pairs or text.strip() == "{}":
            return {k: v for k, v in pairs.items() if v} or None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return {str(k): str(v) for k, v in value.items() if v} if isinstance(value, dict) and value else None


# -- frames --------------------------------------------------------------------------------------

ACCOUNT_FIELDS = ("name", "domain", "website", "domain_names", "country", "parent_id", "external_ids", "email")
CONTACT_FIELDS = ("email", "account_id")


def _columns(batches: Iterable[Sequence[Sequence[Any]]], width: int) -> list[list[Any]]:
    """Batches of rows to columns, a batch at a time (never the rows and the columns all at once)."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for batch in batches:
        for i, column in enumerate(columns):
            column.extend(map(itemgetter(i), batch))  # not zip(*batch): slow for wide batches
    return columns


def _obj(values: Any) -> pd.Series:
    # plain Python objects: pandas' own string arrays are slow to walk element by element
    return pd.Series(values, dtype=object)


def account_frame(rows: Iterable[Sequence[Sequence[Any]]]) -> pd.DataFrame:
    """Account-level records from batches of (source, source_id, *ACCOUNT_FIELDS) rows, in the order given
    (the store's: by source, then source_id), so positions are deterministic. Columns: source,
    source_id, key ("source|account|id"), name, norm, ntok, country, parent_id, external_ids, email and
    the raw domain fields (domain, website, domain_names) that `domain_frame` reads."""
    source, source_id, name, domain, website, names, country, parent, external, email = _columns(rows, 10)
    frame = pd.DataFrame({"source": _obj(source), "source_id": _obj([str(x) for x in source_id])})
    frame["key"] = frame["source"] + "|account|" + frame["source_id"]
    frame["name"] = _obj(name)
    norm = [normalize_name(x) for x in name]
    frame["norm"] = _obj(norm)
    frame["ntok"] = np.fromiter((n.count(" ") + 1 if n else 0 for n in norm), dtype=np.int64, count=len(norm))
    frame["country"] = _obj([normalize_country(x) for x in country])
    frame["parent_id"] = _obj([str(x) if x not in (None, "") else None for x in parent])
    frame["external_ids"] = _obj([external_ids(x) if x is not None and x != "{}" else None for x in external])
    frame["email"] = _obj([x.strip().lower() if isinstance(x, str) and "@" in x else None for x in email])
    frame["raw_domain"], frame["raw_website"], frame["raw_domain_names"] = _obj(domain), _obj(website), _obj(names)
    # integer codes (missing = -1) to group and compare by without touching the strings again
    frame["name_code"], uniques = pd.factorize(frame["norm"])
    firsts = pd.Series([n.split(" ", 1)[0] for n in uniques], dtype=object)
    first_of_unique = pd.factorize(firsts)[0] if len(firsts) else np.zeros(0, dtype=np.int64)
    code = frame["name_code"].to_numpy()
    frame["first_code"] = np.where(code >= 0, first_of_unique[np.maximum(code, 0)] if len(firsts) else -1, -1)
    frame["country_code"] = pd.factorize(frame["country"])[0]
    return frame


def contact_frame(rows: Iterable[Sequence[Sequence[Any]]]) -> pd.DataFrame:
    """Contacts from batches of (source, source_id, email, account_id) rows; e-mails lower-cased."""
    source, source_id, email, account = _columns(rows, 4)
    return pd.DataFrame({
        "source": _obj(source), "source_id": _obj([str(x) for x in source_id]),
        "email": _obj([x.strip().lower() or None if isinstance(x, str) else None for x in email]),
        "account_id": _obj([str(x) if x not in (None, "") else None for x in account])})


def record_positions(accounts: pd.DataFrame) -> dict[str, int]:
    """Record key ("source|account|id") -> position."""
    return dict(zip(accounts["key"].tolist(), range(len(accounts))))


def contact_accounts(contacts: pd.DataFrame, position: dict[str, int]) -> np.ndarray:
    """Position of each contact's account record (-1 when it has none or it is not loaded)."""
    keys = (contacts["source"] + "|account|" + contacts["account_id"].fillna("")).map(position)
    return keys.fillna(-1).to_numpy(dtype=np.int64)


def domain_frame(accounts: pd.DataFrame, contacts: pd.DataFrame, contact_pos: np.ndarray,
                 free_mail: frozenset[str]) -> pd.DataFrame:
    """(pos, domain, via, dom): via "site" for website/domain fields, "email" for a billing e-mail or the
    domain at least half of an account's contacts' e-mails use; dom is an integer code per domain. One
    row per (record, domain), sorted by record."""
    pos_parts: list[np.ndarray] = []
    dom_parts: list[np.ndarray] = []
    via_parts: list[np.ndarray] = []

    def add(positions: np.ndarray, found: np.ndarray, via: str) -> None:
        pos_parts.append(np.asarray(positions, dtype=np.int64))
        dom_parts.append(np.asarray(found, dtype=object))
        via_parts.append(np.full(len(positions), via == "site"))

    for column in ("raw_domain", "raw_website"):
        found = accounts[column].dropna().map(normalize_domain).dropna()
        add(found.index.to_numpy(), found.to_numpy(), "site")
    listed = accounts["raw_domain_names"].dropna()
    listed = listed[(listed != "[]") & (listed != "")]
    if len(listed):
        exploded = listed.map(lambda t: t if isinstance(t, list) else json.loads(t)).explode().dropna()
        found = exploded.map(normalize_domain).dropna()
        add(found.index.to_numpy(), found.to_numpy(), "site")
    billing = accounts["email"].dropna().map(lambda e: email_domain(e, free_mail)).dropna()
    add(billing.index.to_numpy(), billing.to_numpy(), "email")
    # the domain at least half of an account's contacts use (free-mail contacts count against it)
    linked = np.flatnonzero(contact_pos >= 0)
    emails = contacts["email"].to_numpy()[linked]
    at = np.array([e.rpartition("@")[2] if e else "" for e in emails.tolist()], dtype=object)
    code, uniques = pd.factorize(at)
    good = np.array([bool(d) and "." in d and d not in free_mail for d in uniques.tolist()], dtype=bool)
    keep = good[code] if len(code) else np.zeros(0, dtype=bool)
    owner = contact_pos[linked]
    if keep.any():
        pair = owner[keep] * len(uniques) + code[keep]
        pairs, counts = np.unique(pair, return_counts=True)
        total = np.bincount(owner, minlength=len(accounts))
        p, c = pairs // len(uniques), pairs % len(uniques)
        major = counts * 2 >= total[p]
        add(p[major], np.asarray(uniques, dtype=object)[c[major]], "email")
    pos = np.concatenate(pos_parts)
    domain = np.concatenate(dom_parts)
    site = np.concatenate(via_parts)
    free = pd.Series(domain, dtype=object).isin(free_mail).to_numpy()
    pos, domain, site = pos[~free], domain[~free], site[~free]
    dom, _ = pd.factorize(domain)
    # one row per (record, domain): seen on the website beats seen in e-mail
    order = np.lexsort((~site, dom, pos))
    key = pos[order] * (int(dom.max()) + 1 if len(dom) else 1) + dom[order]
    first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    take = order[first]
    return pd.DataFrame({"pos": pos[take], "domain": domain[take],
                         "via": np.where(site[take], "site", "email").astype(object), "dom": dom[take].astype(np.int64)})
