"""BillingWatch's Grafana dashboards, generated from Python (see docs/dashboards.md)."""
