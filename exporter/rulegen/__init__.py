"""Renders the Prometheus recording and alerting rules from the config's `rules:` section."""
