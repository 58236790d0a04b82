"""Connectors: one module per vendor, each reading through the vendor's official SDK."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config.models import HubConfig
    from .records import Connector


def build_connectors(config: "HubConfig", only: list[str] | None = None) -> list["Connector"]:
    """One connector per enabled source in the config (or only the named ones)."""
    enabled = config.sources.enabled()
    unknown = sorted(set(only or []) - set(enabled))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not an enabled source (enabled: {', '.join(enabled) or 'none'})")
    out: list[Connector] = []
    for name, source in enabled.items():
        if only and name not in only:
            continue
        if name == "salesforce":
            from .salesforce import SalesforceConnector as cls
        elif name == "hubspot":
            from .hubspot import HubSpotConnector as cls  # type: ignore[no-redef]
        elif name == "zendesk":
            from .zendesk import ZendeskConnector as cls  # type: ignore[no-redef]
        elif name == "stripe":
            from .stripe import StripeConnector as cls  # type: ignore[no-redef]
        else:
            from .usage import UsageConnector as cls  # type: ignore[no-redef]
        out.append(cls(source))
    return out
