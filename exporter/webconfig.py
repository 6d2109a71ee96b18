"""TLS and basic auth for the private listener, from a web config file in the Prometheus exporter-toolkit format.

The same file an existing Prometheus setup already writes for node_exporter and friends (`--web.config.file`):

    tls_server_config:
      cert_file: server.crt        # relative paths are relative to this file, as in exporter-toolkit
      key_file: server.key
      client_ca_file: ca.crt       # optional: client certificates (mutual TLS)
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...       # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')
    http_server_config:
      headers: {X-Frame-Options: deny}

Go-only TLS tuning (cipher_suites, curve_preferences, prefer_server_cipher_suites) and http2 are accepted and
ignored: Python's defaults apply. Anything else unknown is an error, so a typo never silently leaves a listener
open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
from aiohttp import web

from exporter.config import ConfigError, read_yaml_file

CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
IGNORED_TLS_KEYS = {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites"}
TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"}
# Remembered successful logins (a digest of user and password): bcrypt takes tens of milliseconds by design and
# Prometheus sends the same credentials on every scrape.
AUTH_CACHE_SIZE = 64


@dataclass
class WebConfig:
    ssl: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def protected(self) -> bool:
        return self.ssl is not None or bool(self.users)


def load_web_config(path: str) -> WebConfig:
    """The parsed file, or WebConfig() for "". Raises ConfigError naming each problem and the file."""
    if not path:
        return WebConfig()
    doc = read_yaml_file(path)
    base = Path(path).resolve().parent
    errors: list[str] = []
    known = {"tls_server_config", "basic_auth_users", "http_server_config"}
    errors += [f"{key}: unknown key" for key in doc if key not in known]
    out = WebConfig()
    tls = doc.get("tls_server_config")
    if tls is not None:
        out.ssl = _ssl_context(tls, base, errors)
    users = doc.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        errors.append("basic_auth_users: expected a mapping of user name to bcrypt hash")
        users = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            errors.append(f"basic_auth_users.{user}: expected a bcrypt hash ($2y$...), not a password")
            continue
        out.users[str(user)] = hashed.encode()
    server = doc.get("http_server_config") or {}
    if not isinstance(server, dict):
        errors.append("http_server_config: expected a mapping")
        server = {}
    for key, value in server.items():
        if key == "headers" and isinstance(value, dict):
            out.headers = {str(k): str(v) for k, v in value.items()}
        elif key != "http2":
            errors.append(f"http_server_config.{key}: not supported")
    if errors:
        raise ConfigError([f"{path}: {e}" for e in errors])
    return out


def _ssl_context(tls: Any, base: Path, errors: list[str]) -> ssl.SSLContext | None:
    if not isinstance(tls, dict):
        errors.append("tls_server_config: expected a mapping")
        return None
    for key in tls:
        if key not in TLS_KEYS | IGNORED_TLS_KEYS:
            errors.append(f"tls_server_config.{key}: unknown or unsupported key")
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not cert or not key:
        errors.append("tls_server_config: cert_file and key_file are both required")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(base / str(cert), base / str(key))
    except (OSError, ssl.SSLError) as exc:
        errors.append(f"tls_server_config: cannot load cert_file {cert} / key_file {key}: {exc}")
        return None
    ca = tls.get("client_ca_file")
    # exporter-toolkit: a client CA without an explicit type means client certificates are required.
    auth_type = tls.get("client_auth_type") or ("RequireAndVerifyClientCert" if ca else "NoClientCert")
    if auth_type not in CLIENT_AUTH:
        errors.append(f"tls_server_config.client_auth_type: one of {', '.join(CLIENT_AUTH)}, got {auth_type!r}")
    else:
        ctx.verify_mode = CLIENT_AUTH[auth_type]
        if ctx.verify_mode != ssl.CERT_NONE:
            if not ca:
                errors.append(f"tls_server_config: client_auth_type {auth_type} needs client_ca_file")
            else:
                try:
                    ctx.load_verify_locations(base / str(ca))
                except (OSError, ssl.SSLError) as exc:
                    errors.append(f"tls_server_config: cannot load client_ca_file {ca}: {exc}")
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        value = tls.get(key)
        if value is None:
            continue
        if value not in TLS_VERSIONS:
            errors.append(f"tls_server_config.{key}: one of {', '.join(TLS_VERSIONS)}, got {value!r}")
        else:
            setattr(ctx, attr, TLS_VERSIONS[value])
    if "min_version" not in tls:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # exporter-toolkit's default
    return ctx


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes, off the event loop, remembering recent successes."""

    def __init__(self, users: dict[str, bytes]):
        self.users = users
        self._ok: dict[bytes, None] = {}
        # Unknown users are checked against this so that they take as long as known ones (no user enumeration).
        self._dummy = bcrypt.hashpw(b"billingwatch", bcrypt.gensalt(rounds=10))

    def _digest(self, user: str, password: bytes) -> bytes:
        return hashlib.sha256(user.encode() + b"\0" + password + b"\0" + self.users.get(user, b"")).digest()

    async def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user_b, sep, password = base64.b64decode(header[6:], validate=True).partition(b":")
            user = user_b.decode()
        except (binascii.Error, ValueError):
            return False
        if not sep:
            return False
        digest = self._digest(user, password)
        if any(hmac.compare_digest(digest, known) for known in self._ok):
            return True
        hashed = self.users.get(user)
        ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed or self._dummy)
        ok = ok and hashed is not None
        if ok:
            self._ok[digest] = None
            while len(self._ok) > AUTH_CACHE_SIZE:
                del self._ok[next(iter(self._ok))]
        return ok

    def middleware(self) -> Any:
        @web.middleware
        async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if await self.check(request.headers.get("Authorization")):
                return await handler(request)
            return web.Response(
                status=401,
                text="401 Unauthorized\n",
                headers={"WWW-Authenticate": 'Basic realm="billingwatch"'},
            )

        return auth


def add_headers(app: web.Application, headers: dict[str, str]) -> None:
    """http_server_config.headers on every response, streamed ones included (set just before headers are sent)."""

    async def on_prepare(_: web.Request, resp: web.StreamResponse) -> None:
        resp.headers.update(headers)

    app.on_response_prepare.append(on_prepare)
