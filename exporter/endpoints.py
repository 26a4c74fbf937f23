"""Where the upstream APIs are: the config's `endpoints` section, with Microsoft's public cloud as
the default. Each collector kind builds its client from the URLs here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_DAP_STATISTICS_URL = (
    "https://traf-pcsvcadmin-prod.trafficmanager.net"
    "/CustomerServiceAdminApi/Web/v1/delegatedAdminStatistics"
)
DEFAULT_DAP_CUSTOMERS_URL = DEFAULT_DAP_STATISTICS_URL.removesuffix("Statistics") + "Customers"
DEFAULT_SCOPE = "https://api.partnercustomeradministration.microsoft.com/.default"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
DEFAULT_GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@dataclass(frozen=True)
class Endpoints:
    """The config's endpoints section: the identity platform, the APIs and their scopes."""

    authority_host: str = DEFAULT_AUTHORITY_HOST
    dap_statistics_url: str = DEFAULT_DAP_STATISTICS_URL
    dap_customers_url: str = DEFAULT_DAP_CUSTOMERS_URL
    scope: str = DEFAULT_SCOPE
    graph_url: str = DEFAULT_GRAPH_URL
    graph_scope: str = DEFAULT_GRAPH_SCOPE
    ca_file: Path | None = None
