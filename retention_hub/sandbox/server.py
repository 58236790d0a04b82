"""Serve the four emulators on 127.0.0.1 (Salesforce over TLS with a certificate made at start-up)
and write `sandbox.json` so any client can be pointed at them."""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from .emulator import Emulator
from .world import Knobs, World

HOST = "127.0.0.1"  # the sandbox never listens beyond loopback
VENDORS = ("salesforce", "hubspot", "zendesk", "stripe")


def emulator_class(vendor: str) -> type[Emulator]:
    if vendor == "salesforce":
        from .salesforce_api import SalesforceEmulator
        return SalesforceEmulator
    if vendor == "hubspot":
        from .hubspot_api import HubSpotEmulator
        return HubSpotEmulator
    if vendor == "zendesk":
        from .zendesk_api import ZendeskEmulator
        return ZendeskEmulator
    if vendor == "stripe":
        from .stripe_api import StripeEmulator
        return StripeEmulator
    raise ValueError(f"unknown vendor {vendor!r}")


def make_credentials() -> dict[str, dict[str, str]]:
    """Fresh random credentials for each emulated vendor (they exist only in this sandbox)."""
    org = "00D5g00000" + secrets.token_hex(3).upper()[:5]
    return {
        "salesforce": {"access_token": f"{org}!AQ{secrets.token_urlsafe(40)}",
                       "client_id": "3MVG9" + secrets.token_urlsafe(30),
                       "client_secret": secrets.token_hex(32).upper(),
                       "refresh_token": "5Aep" + secrets.token_urlsafe(40),
                       "username": "admin@sandbox.example.com", "password": secrets.token_urlsafe(12),
                       "organization_id": org[:15]},
        "hubspot": {"access_token": "pat-na1-" + secrets.token_hex(16)},
        "zendesk": {"subdomain": "sandbox", "email": "admin@sandbox.example.com",
                    "api_token": secrets.token_urlsafe(30)},
        "stripe": {"api_key": "sk_test_" + secrets.token_urlsafe(40)},
    }


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost, valid for a year."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Retention Hub sandbox")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address(HOST))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "sandbox-cert.pem", directory / "sandbox-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class Sandbox:
    """The running emulators of one world."""

    world: World
    directory: Path
    credentials: dict[str, dict[str, str]]
    emulators: dict[str, Emulator] = field(default_factory=dict)
    servers: dict[str, BaseWSGIServer] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    ca_cert: Path | None = None

    def info(self) -> dict[str, Any]:
        """The content of sandbox.json."""
        sf, zd = self.credentials["salesforce"], self.credentials["zendesk"]
        urls = {v: self.urls.get(v, "") for v in VENDORS}
        return {
            "salesforce": {"instance_url": urls["salesforce"], "access_token": sf["access_token"],
                           "token_url": urls["salesforce"] + "/services/oauth2/token",
                           "client_id": sf["client_id"], "client_secret": sf["client_secret"],
                           "refresh_token": sf["refresh_token"], "username": sf["username"],
                           "password": sf["password"], "ca_cert": str(self.ca_cert)},
            "hubspot": {"base_url": urls["hubspot"],
                        "access_token": self.credentials["hubspot"]["access_token"]},
            "zendesk": {"base_url": urls["zendesk"], "subdomain": zd["subdomain"],
                        "email": zd["email"], "api_token": zd["api_token"]},
            "stripe": {"base_url": urls["stripe"], "api_key": self.credentials["stripe"]["api_key"]},
            "truth_dir": str(self.directory / "truth"),
            "usage_db": str(self.world.usage_db) if self.world.usage_db else None,
        }

    def write_info(self) -> Path:
        path = self.directory / "sandbox.json"
        path.write_text(json.dumps(self.info(), indent=2))
        path.chmod(0o600)  # it holds the sandbox's credentials
        return path

    def stop(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start(world: World, directory: Path, knobs: dict[str, Knobs] | Knobs | None = None,
          ports: dict[str, int] | None = None,
          credentials: dict[str, dict[str, str]] | None = None,
          vendors: tuple[str, ...] = VENDORS) -> Sandbox:
    """Start the emulators (all four by default) in background threads; port 0 picks a free port."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(world, directory, credentials or make_credentials())
    cert, key = make_certificate(directory)
    sandbox.ca_cert = cert
    for vendor in vendors:
        vendor_knobs = knobs.get(vendor, Knobs()) if isinstance(knobs, dict) else Knobs(**vars(knobs or Knobs()))
        app = emulator_class(vendor)(world, sandbox.credentials[vendor], vendor_knobs)
        context = None
        if vendor == "salesforce":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        server = make_server(HOST, (ports or {}).get(vendor, 0), app, threaded=True, ssl_context=context)
        server.daemon_threads = True
        scheme = "https" if context else "http"
        sandbox.urls[vendor] = f"{scheme}://{HOST}:{server.server_port}"
        sandbox.emulators[vendor], sandbox.servers[vendor] = app, server
        threading.Thread(target=server.serve_forever, name=f"sandbox-{vendor}", daemon=True).start()
    sandbox.write_info()
    return sandbox
