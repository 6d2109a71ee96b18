"""In-process detectors: the ones that need per-customer or per-subscription state."""
