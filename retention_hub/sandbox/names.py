"""Company and person names with the mess real systems hold: legal suffixes, casing, typos."""
from __future__ import annotations

import random
import re

FIRST = ("Northwind Bluepeak Cedar Granite Harbor Summit Silver Redwood Ironclad Brightline Clearwater "
         "Evergreen Falcon Golden Horizon Juniper Keystone Lakeside Meridian Nimbus Oakridge Pinnacle "
         "Quantum Riverstone Sapphire Timber Unity Vertex Willow Zenith Acorn Beacon Cobalt Delta Ember "
         "Fjord Glacier Helix Indigo Jade Kestrel Lumen Maple Nova Onyx Polaris Quarry Radiant Sierra "
         "Tidal Umber Vantage Wren Yarrow Zephyr Atlas Birch Canyon Dune Echo Flint Grove Hawthorne Iris "
         "Jasper Kinetic Lark Mosaic Nexus Orchid Prairie Quill Ridge Solstice Tundra Upland Vireo Wildrose "
         "Apex Boulder Crescent Drift Elm Forge Gale Haven Isle Jetstream Kodiak Lattice Magnolia Nordic "
         "Orbit Pebble Quasar Rowan Spruce Talon Ultra Vista Westwind Xenon Yukon Alder Basalt Cypress "
         "Dawn Everest Fern Garnet Heron Ivory Juno Krypton Lotus Mistral Noble Ocean Pine Raven Slate "
         "Thistle Valor Willowbrook Amber Bramble Coral Dover Emerald Foxglove Grail Hollow Ivy").split()
CORE = ("Logistics Analytics Health Foods Robotics Labs Systems Software Networks Media Energy Capital "
        "Bio Security Cloud Retail Motors Foods Learning Legal Insurance Travel Studios Dynamics Works "
        "Payments Data Devices Pharma Marine Aerospace Construction Consulting Design Telecom Mobility "
        "Ventures Solutions Partners Brands Farms Textiles Metrics Freight Clinics Games Homes Audio "
        "Optics Materials Water Power Finance Supply Wellness Sports").split()
THIRD = ["", "Group", "Holdings", "Global", "International", "Technologies", "Industries", "Collective",
         "Company", "Works", "Services", "Digital", "Partners", "Network", "Co", "Enterprises"]
FIRST_NAMES = ("James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
               "Richard Susan Joseph Jessica Thomas Sarah Carlos Karen Daniel Nancy Matthew Lisa Anthony "
               "Betty Mark Sandra Paul Ashley Steven Emily Andrew Kimberly Joshua Donna Kevin Michelle "
               "Brian Carol George Amanda Timothy Melissa Ronald Deborah Jason Stephanie Ryan Rebecca "
               "Jacob Laura Gary Sharon Nicholas Cynthia Eric Kathleen Priya Wei Hans Sofia Lukas Emma "
               "Mateo Chloe Yuki Amir Fatima Olga Pierre Ingrid Lars Aisha Diego Mei Raj").split()
LAST_NAMES = ("Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
              "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
              "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
              "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Mueller Schmidt "
              "Schneider Fischer Weber Dubois Laurent Bernard Rossi Russo Kowalski Novak Jansen DeVries "
              "Andersson Johansson Tanaka Sato Kim Park Chen Wang Patel Shah").split()
TITLES = ("VP Operations", "Head of Customer Success", "Director of IT", "CTO", "COO", "Product Manager",
          "Operations Manager", "Finance Director", "Engineering Manager", "Analyst", "Office Manager",
          "Head of Data", "Procurement Lead", "CEO")
FREE_MAIL = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me")
COUNTRIES = ("US", "GB", "DE", "FR", "CA", "NL", "AU", "ES", "SE")
COUNTRY_SHARE = (0.5, 0.12, 0.1, 0.07, 0.07, 0.05, 0.05, 0.02, 0.02)
COUNTRY_NAME = {"US": "USA", "GB": "UK", "DE": "Germany", "FR": "France", "CA": "Canada",
                "NL": "Netherlands", "AU": "Australia", "ES": "Spain", "SE": "Sweden"}
LEGAL = {"US": ("Inc", "LLC", "Corp"), "GB": ("Ltd", "PLC"), "DE": ("GmbH", "AG"), "FR": ("SA", "SAS"),
         "CA": ("Inc", "Ltd"), "NL": ("BV",), "AU": ("Pty Ltd",), "ES": ("SL",), "SE": ("AB",)}
TLD = {"GB": ".co.uk", "DE": ".de", "FR": ".fr", "NL": ".nl", "AU": ".com.au", "ES": ".es", "SE": ".se"}
INDUSTRIES = ("Technology", "Healthcare", "Finance", "Retail", "Manufacturing", "Education", "Media",
              "Transportation", "Energy", "Consulting")


def company_base_names(n: int, rng: random.Random) -> list[str]:
    """n distinct company names (without legal suffix)."""
    space = len(FIRST) * len(CORE) * len(THIRD)
    if n > space:
        raise ValueError(f"at most {space} distinct customers are supported")
    picks = rng.sample(range(space), n)
    out = []
    for p in picks:
        a, rest = divmod(p, len(CORE) * len(THIRD))
        b, c = divmod(rest, len(THIRD))
        out.append(" ".join(w for w in (FIRST[a], CORE[b], THIRD[c]) if w))
    return out


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def domain_for(base: str, country: str, rng: random.Random) -> str:
    words = base.split()
    stem = slug("".join(words[:2])) if rng.random() < 0.7 else slug(base)
    tld = TLD.get(country, ".com") if rng.random() < 0.6 else rng.choice((".com", ".io", ".co", ".com"))
    return stem + tld


def legal_name(base: str, country: str, rng: random.Random) -> str:
    suffix = rng.choice(LEGAL[country])
    return f"{base}, {suffix}." if suffix in ("Inc", "Corp") and rng.random() < 0.4 else f"{base} {suffix}"


def typo(name: str, rng: random.Random) -> str:
    """One dropped or swapped letter, as hand-typed records have."""
    i = rng.randrange(1, max(2, len(name) - 1))
    if rng.random() < 0.5:
        return name[:i] + name[i + 1:]
    return name[:i - 1] + name[i] + name[i - 1] + name[i + 1:]


def variant(base: str, country: str, rng: random.Random, style: str) -> str:
    """How one system spells the company: `style` is crm, marketing, support or billing."""
    if style == "crm":
        name = legal_name(base, country, rng) if rng.random() < 0.6 else base
    elif style == "marketing":
        name = base if rng.random() < 0.8 else legal_name(base, country, rng)
    elif style == "support":
        words = base.split()
        name = words[0] if len(words) > 2 and rng.random() < 0.3 else base
    else:
        r = rng.random()
        name = legal_name(base, country, rng).upper() if r < 0.25 else base if r < 0.8 else legal_name(base, country, rng)
    return typo(name, rng) if rng.random() < 0.03 else name


def person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def email_for(first: str, last: str, domain: str, rng: random.Random, free_mail_rate: float = 0.1) -> str:
    if rng.random() < free_mail_rate:
        return f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@{rng.choice(FREE_MAIL)}"
    pattern = rng.choice(("{f}.{l}", "{f}", "{fi}{l}", "{f}_{l}"))
    local = pattern.format(f=first.lower(), l=last.lower(), fi=first[0].lower())
    return f"{local}@{domain}"
