"""Development tools, not part of the exporter: dashboard builder, Grafana-like queries, renderer."""
