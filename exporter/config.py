"""Configuration: packaged defaults, a user's YAML file, environment variables and flags, in that order.

The packaged `defaults.yml` is both the list of every key and the only place a default value is written; the
dataclasses below give those keys their types. A user's file is merged over the defaults and any key the
defaults do not have is an error that names its dotted location.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from exporter.detectors.config import DetectorsConfig
from exporter.poller_config import PollerConfig
from exporter.rulegen.config import RulesConfig


class ConfigError(Exception):
    """A config problem a user must fix; `errors` lists each one with its dotted location."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class ServerConfig:
    listen: str
    metrics_listen: str
    max_body_bytes: int
    recent_events: int
    shutdown_timeout_seconds: float
    prometheus_url: str
    alertmanager_url: str
    idle_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int
    web_config_file: str


@dataclass(frozen=True)
class StripeConfig:
    webhook_secrets: list[str]
    tolerance_seconds: int
    mode: str


@dataclass(frozen=True)
class StateConfig:
    path: str
    retention_seconds: int
    flush_interval_seconds: float


@dataclass(frozen=True)
class LogConfig:
    level: str
    format: str


@dataclass(frozen=True)
class MetricsConfig:
    max_label_values: int
    max_series_per_metric: int


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    stripe: StripeConfig
    state: StateConfig
    log: LogConfig
    metrics: MetricsConfig
    detectors: DetectorsConfig
    rules: RulesConfig
    poller: PollerConfig


MIN_RETENTION_SECONDS = 4 * 86400
MODES = ("any", "live", "test")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")

# Environment variables that override one key each. STRIPE_WEBHOOK_SECRET is a comma-separated list.
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "BILLINGWATCH_LISTEN": ("server", "listen"),
    "BILLINGWATCH_METRICS_LISTEN": ("server", "metrics_listen"),
    "BILLINGWATCH_STATE": ("state", "path"),
    "BILLINGWATCH_LOG_LEVEL": ("log", "level"),
    "BILLINGWATCH_MODE": ("stripe", "mode"),
    "BILLINGWATCH_PROMETHEUS_URL": ("server", "prometheus_url"),
    "BILLINGWATCH_ALERTMANAGER_URL": ("server", "alertmanager_url"),
    "BILLINGWATCH_WEB_CONFIG_FILE": ("server", "web_config_file"),
    "STRIPE_WEBHOOK_SECRET": ("stripe", "webhook_secrets"),
}


# Secrets may also come from a file named by <VAR>_FILE (Docker secrets, systemd credentials): the file's content,
# stripped, is the value. An empty file counts as unset, so docker-compose can mount a placeholder.
SECRET_FILE_VARS = ("STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY")


def resolve_secret_files(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with each <VAR>_FILE of SECRET_FILE_VARS read into <VAR>; both set is an error, not a guess."""
    out = dict(env)
    errors = []
    for var in SECRET_FILE_VARS:
        path = env.get(f"{var}_FILE") or ""
        if not path:
            continue
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{var}_FILE: cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if not value:
            continue
        if env.get(var):
            errors.append(f"{var} and {var}_FILE are both set: set only one")
            continue
        out[var] = value
    if errors:
        raise ConfigError(errors)
    return out


def default_document() -> dict[str, Any]:
    text = resources.files("exporter").joinpath("defaults.yml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def read_yaml_file(path: str | Path) -> dict[str, Any]:
    return read_yaml_document(path).doc


@dataclass(frozen=True)
class YamlDocument:
    """A config file's mapping, the line of every key in it (dotted locations, `[i]` for list items), and the
    keys it defines twice (YAML loaders silently keep the last one, which hides typos and merge accidents)."""

    doc: dict[str, Any]
    lines: dict[str, int]
    duplicates: list[tuple[int, str]]


def read_yaml_document(path: str | Path) -> YamlDocument:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read: {reason}"]) from exc
    try:
        doc = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if doc is None:
        return YamlDocument({}, {}, [])
    if not isinstance(doc, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections, got {type(doc).__name__}"])
    lines: dict[str, int] = {}
    duplicates: list[tuple[int, str]] = []
    _walk_nodes(node, "", lines, duplicates)
    return YamlDocument(doc, lines, duplicates)


def _walk_nodes(
    node: yaml.Node | None, where: str, lines: dict[str, int], duplicates: list[tuple[int, str]]
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            loc = f"{where}.{key_node.value}" if where else str(key_node.value)
            line = key_node.start_mark.line + 1
            if loc in lines:
                first = lines[loc]
                duplicates.append((line, f"{loc}: duplicate key (first at line {first}; YAML keeps only the last)"))
            else:
                lines[loc] = line
            _walk_nodes(value_node, loc, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            loc = f"{where}[{i}]"
            lines.setdefault(loc, item.start_mark.line + 1)
            _walk_nodes(item, loc, lines, duplicates)


def _location(error: str) -> str:
    return error.split(": ", 1)[0]


def _line_of(location: str, lines: Mapping[str, int]) -> int | None:
    """The line of `location` or, for a key the file does not have (a missing one), of its nearest parent."""
    while location:
        if location in lines:
            return lines[location]
        cut = max(location.rfind("."), location.rfind("["))
        location = location[:cut] if cut > 0 else ""
    return None


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in `override` replace those in `base`."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, where: str, errors: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where, errors)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, errors)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {type(value).__name__}")
            return []
        return [_coerce(v, item_tp, f"{where}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return {}
        return {
            _coerce(k, key_tp, f"{where}", errors): _coerce(v, val_tp, f"{where}.{k}", errors)
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(f"{where}: expected a number, got {value!r}")
            return 0.0
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{where}: expected an integer, got {value!r}")
            return 0
        return value
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{where}: expected true or false, got {value!r}")
            return False
        return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {value!r}")
            return ""
        return value
    if tp is Any:
        return value
    errors.append(f"{where}: unsupported type {_type_name(tp)}")
    return value


def _build(cls: Any, doc: Any, where: str, errors: list[str]) -> Any:
    label = where or "top level"
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        errors.append(f"{label}: expected a mapping, got {type(doc).__name__}")
        doc = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in doc:
        if key not in fields:
            errors.append(f"{where + '.' if where else ''}{key}: unknown key{_did_you_mean(str(key), fields)}")
    values = {}
    for name in fields:
        loc = f"{where}.{name}" if where else name
        if name not in doc:
            errors.append(f"{loc}: missing (and no default)")
            continue
        values[name] = _coerce(doc[name], hints[name], loc, errors)
    if any(name not in values for name in fields):
        return None
    return cls(**values)


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _unknown_keys(user: Any, defaults: Any, where: str, errors: list[str]) -> None:
    """Report user keys that the defaults document does not have, with their dotted location."""
    if not isinstance(user, Mapping) or not isinstance(defaults, Mapping):
        return
    for key, value in user.items():
        loc = f"{where}.{key}" if where else str(key)
        if key not in defaults:
            # Free-form maps (e.g. custom detectors' own options) declare themselves with a `{}` default.
            if defaults == {} and where:
                continue
            errors.append(f"{loc}: unknown key{_did_you_mean(str(key), defaults)}")
        elif isinstance(defaults[key], Mapping) and defaults[key]:
            _unknown_keys(value, defaults[key], loc, errors)


def _validate(cfg: Config, errors: list[str]) -> None:
    if cfg.stripe.mode not in MODES:
        errors.append(f"stripe.mode: must be one of {', '.join(MODES)}, got {cfg.stripe.mode!r}")
    if cfg.log.level not in LOG_LEVELS:
        errors.append(f"log.level: must be one of {', '.join(LOG_LEVELS)}, got {cfg.log.level!r}")
    if cfg.log.format not in LOG_FORMATS:
        errors.append(f"log.format: must be one of {', '.join(LOG_FORMATS)}, got {cfg.log.format!r}")
    if cfg.state.retention_seconds < MIN_RETENTION_SECONDS:
        errors.append(
            f"state.retention_seconds: must be at least {MIN_RETENTION_SECONDS} (Stripe retries for 3 days)"
        )
    if cfg.state.flush_interval_seconds <= 0 or cfg.state.flush_interval_seconds > 1.0:
        errors.append("state.flush_interval_seconds: must be above 0 and at most 1.0")
    if cfg.stripe.tolerance_seconds <= 0:
        # The SDK reads 0 as "no age check at all": a signature from 1970 would verify.
        errors.append("stripe.tolerance_seconds: must be at least 1 (0 would switch the replay check off)")
    for key in ("idle_timeout_seconds", "body_timeout_seconds", "shutdown_timeout_seconds"):
        if getattr(cfg.server, key) <= 0:
            errors.append(f"server.{key}: must be above 0")
    if cfg.server.max_connections < 1:
        errors.append("server.max_connections: must be at least 1")
    if cfg.server.max_body_bytes < 1024:
        errors.append("server.max_body_bytes: must be at least 1024")
    if cfg.metrics.max_label_values < 1:
        errors.append("metrics.max_label_values: must be at least 1")
    if cfg.metrics.max_series_per_metric < 1:
        errors.append("metrics.max_series_per_metric: must be at least 1")
    for key in ("listen", "metrics_listen"):
        try:
            parse_hostport(getattr(cfg.server, key))
        except ValueError as exc:
            errors.append(f"server.{key}: {exc}")
    for i, secret in enumerate(cfg.stripe.webhook_secrets):
        if not secret.strip():
            errors.append(f"stripe.webhook_secrets[{i}]: empty secret")
    errors.extend(cfg.detectors.validate())
    errors.extend(cfg.rules.validate())
    errors.extend(cfg.poller.validate())


def parse_hostport(value: str) -> tuple[str, int]:
    """'0.0.0.0:8000', ':8000', '[::1]:8000' -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port must be a number, got {port!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range: {number}")
    return host, number


def build_config(
    user_doc: Mapping[str, Any] | None = None,
    *,
    where: str = "",
    lines: Mapping[str, int] | None = None,
    line_errors: list[tuple[int, str]] | None = None,
) -> Config:
    """Defaults merged with `user_doc`; raises ConfigError naming every problem at once: unknown keys, wrong
    types and bad values, in file order with the line of each when `lines` (dotted location -> line) is given.
    `line_errors` are problems found while reading the file (duplicate keys), reported with the rest."""
    defaults = default_document()
    found: list[str] = []
    user_doc = user_doc or {}
    _unknown_keys(user_doc, defaults, "", found)
    cfg = _build(Config, merge(defaults, user_doc), "", found)
    if cfg is not None and _complete(cfg):
        # A value that already has a type error holds a placeholder: its value checks would only add noise.
        reported = [_location(e) for e in found]
        checked: list[str] = []
        _validate(cfg, checked)
        found.extend(e for e in checked if not any(_within(_location(e), loc) for loc in reported))
    if found or line_errors:
        # Unknown keys are seen both against the defaults and against the types: report each once.
        located = [(_line_of(_location(e), lines or {}), e) for e in dict.fromkeys(found)]
        located += list(line_errors or [])
        located.sort(key=lambda item: item[0] if item[0] is not None else float("inf"))
        raise ConfigError([_with_line(e, where, line) for line, e in located])
    return cfg


def _complete(obj: Any) -> bool:
    """Every nested section was built (a section given as a list or a scalar leaves None behind)."""
    if obj is None:
        return False
    hints = typing.get_type_hints(type(obj))
    return all(_complete(getattr(obj, name)) for name, tp in hints.items() if dataclasses.is_dataclass(tp))


def _within(location: str, reported: str) -> bool:
    return location == reported or location.startswith(reported + ".") or location.startswith(reported + "[")


def _with_line(error: str, where: str, line: int | None) -> str:
    if line is None or not where:
        return f"{where}{error}"
    return f"{where.rstrip(': ')}:{line}: {error}"


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults < config file < environment < explicit overrides (CLI flags, as a nested mapping)."""
    env = resolve_secret_files(os.environ if env is None else env)
    doc: dict[str, Any] = {}
    if path:
        document = read_yaml_document(path)
        doc = document.doc
        # The file's own problems are reported against the file, with lines, before env and flags are layered on.
        build_config(doc, where=f"{path}: ", lines=document.lines, line_errors=document.duplicates)
    for var, (section, key) in ENV_KEYS.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        value: Any = raw
        if var == "STRIPE_WEBHOOK_SECRET":
            value = [s.strip() for s in raw.split(",") if s.strip()]
        doc = merge(doc, {section: {key: value}})
    if overrides:
        doc = merge(doc, overrides)
    return build_config(doc)
