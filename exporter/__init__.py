"""BillingWatch: a Prometheus-native Stripe billing monitor."""

__version__ = "0.1.0"
