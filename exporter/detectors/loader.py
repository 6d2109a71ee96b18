"""Resolves 'package.module:Name' references of custom detectors (no dependency on the config, so the config's
validation can use it too)."""

from __future__ import annotations

import importlib
from typing import Any


def resolve(path: str) -> Any:
    """'package.module:Name' (or 'package.module:Outer.Inner') -> the object."""
    module_name, _, attr_path = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj
