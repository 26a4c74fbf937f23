"""The demo's partner: tenants registered in the simulator, and a config that points at them.

Used by the demo and by `python -m exporter.simulator`; it knows the exporter's config format,
never the exporter's code.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import yaml

from exporter.simulator.app import Simulator
from exporter.simulator.data import with_hostile_names

DEMO_CLIENT_ID = "5b0c7e4a-1f9e-4c55-9d5e-3a1c2b7d8e90"
# An app-only registration for Graph, as a partner may keep one apart from the SAM app.
DEMO_GRAPH_CLIENT_ID = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
DEMO_COLLECTORS = ["dap_statistics", "gdap_relationships", "gdap_access_assignments", "dap_customers",
                   "partner_customers"]
# Graph throttles now and then; the demo shows how the exporter copes.
DEMO_GRAPH_THROTTLE_EVERY = 7
DEMO_TENANTS = {
    "contoso": "6f1b2c3d-4e5f-4a7b-8c9d-0e1f2a3b4c5d",
    "fabrikam": "7a2b3c4d-5e6f-4b8c-9d0e-1f2a3b4c5d6e",
    "northwind": "8b3c4d5e-6f7a-4c9d-0e1f-2a3b4c5d6e7f",
    "tailspin": "9c4d5e6f-7a8b-4d0e-1f2a-3b4c5d6e7f80",
}
# Its admin is not in the partner's Admin Agents group: Graph shows that user an empty list, so the
# demo shows what PartnerCenterGDAPNoneVisible and the status page say about it.
DEMO_OUTSIDE_ADMIN_AGENTS = "tailspin"


def write_demo_config(sim: Simulator, workdir: Path, *, hostile: bool = False) -> Path:
    """Register demo tenants in the simulator and write a config that points at it; `hostile`
    gives the first customers of each tenant the names a hostile upstream could send."""
    sim.add_client(DEMO_CLIENT_ID)
    graph_secret = secrets.token_urlsafe(24)
    sim.add_client(DEMO_GRAPH_CLIENT_ID, graph_secret)
    graph_secret_file = workdir / "graph.client-secret"
    graph_secret_file.touch(mode=0o600)
    graph_secret_file.write_text(graph_secret)
    tenants = []
    for name, tenant_id in DEMO_TENANTS.items():
        sim_tenant = sim.add_tenant(tenant_id, customers=60 if name == DEMO_OUTSIDE_ADMIN_AGENTS else None)
        if hostile:
            sim_tenant.customers = with_hostile_names(sim_tenant.customers, sim_tenant.relationships)
        sim.tenants[tenant_id].users_in_admin_agents = name != DEMO_OUTSIDE_ADMIN_AGENTS
        seed = workdir / f"{name}.refresh-token"
        seed.touch(mode=0o600)
        seed.write_text(sim.issue_refresh_token(tenant_id, DEMO_CLIENT_ID,
                                                f"admin@{name}.onmicrosoft.com"))
        tenant = {"name": name, "tenant_id": tenant_id, "client_id": DEMO_CLIENT_ID,
                  "collectors": DEMO_COLLECTORS,
                  "auth": {"method": "refresh_token",
                           "token_cache_file": str(workdir / f"{name}.tokencache.json"),
                           "refresh_token_file": str(seed)}}
        if name == "northwind":
            # One tenant reads Graph app-only, the other two with the signed-in user's token.
            tenant["graph_auth"] = {"method": "client_credentials", "client_id": DEMO_GRAPH_CLIENT_ID,
                                    "client_secret_file": str(graph_secret_file)}
        tenants.append(tenant)
    config = {"poll_interval": "1m", "request_timeout": "10s",
              "inactive_thresholds_days": [30, 60, 90],
              "endpoints": sim.endpoints_config(),
              "tenants": tenants}
    path = workdir / "config.yaml"
    path.write_text("# Written by the simulator's scenario (exporter/simulator/scenario.py); points at the "
                    "simulator it started.\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path
