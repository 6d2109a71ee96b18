"""Working with event history: generate, fetch, replay and backtest Stripe events."""
