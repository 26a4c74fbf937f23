"""The collector kinds, one module each, and the registry that is the only list of them.

Adding a kind: write exporter/collectors/<kind>.py with a KIND, and add it below
(docs/development.md has the steps).
"""

from exporter.collectors import (
    access,
    dap_customers,
    dap_statistics,
    gdap_access_assignments,
    gdap_relationships,
    migration,
    partner_customers,
)
from exporter.collectors.kind import Context, Join, Kind, Registry, SourceSettings

REGISTRY = Registry(
    kinds=[dap_statistics.KIND, gdap_relationships.KIND, gdap_access_assignments.KIND, dap_customers.KIND,
           partner_customers.KIND],
    joins=[access.JOIN, migration.JOIN])
# What a tenant runs when its config names no collectors.
DEFAULT_COLLECTORS: tuple[str, ...] = (dap_statistics.NAME,)

__all__ = ["DEFAULT_COLLECTORS", "REGISTRY", "Context", "Join", "Kind", "Registry", "SourceSettings"]
