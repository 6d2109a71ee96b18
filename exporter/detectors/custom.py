"""Loads custom in-process detectors named in `detectors.custom` (`class: "package.module:ClassName"`)."""

from __future__ import annotations

from exporter.config import ConfigError
from exporter.detectors.base import Detector, DetectorContext
from exporter.detectors.loader import resolve


def load_custom(index: int, name: str, factory_path: str, context: DetectorContext) -> Detector:
    where = f"detectors.custom[{index}]"
    try:
        factory = resolve(factory_path)
    except (ImportError, AttributeError) as exc:
        raise ConfigError([f"{where}.class: cannot import {factory_path!r}: {exc}"]) from exc
    if not callable(factory):
        raise ConfigError([f"{where}.class: {factory_path!r} is not a class or function"])
    try:
        detector = factory(context)
    except Exception as exc:
        raise ConfigError([f"{where}: {factory_path}(context) failed: {type(exc).__name__}: {exc}"]) from exc
    for method in ("on_event", "tick"):
        if not callable(getattr(detector, method, None)):
            raise ConfigError([f"{where}.class: {factory_path!r} built an object without {method}()"])
    # The configured name is the one its alerts carry.
    try:
        detector.name = name
    except AttributeError as exc:
        raise ConfigError([f"{where}.class: cannot set `name` on {factory_path!r}"]) from exc
    return detector
