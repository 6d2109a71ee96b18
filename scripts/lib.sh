# Shared by scripts/run.sh and scripts/test.sh: install what the project needs, idempotently.

need_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "error: '$*' needs root (or sudo)" >&2; return 1; fi
}

ensure_debian_packages() {
  local missing=()
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v prometheus-alertmanager >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 \
    || missing+=(prometheus-alertmanager)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    need_root apt-get update -qq
    need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian's packages start their own services where systemd runs, on the very ports run.sh uses (9090, 9093);
    # BillingWatch starts its own, so the services that this install just started are stopped and disabled.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      need_root systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true
    fi
  fi
}

# Only the tests need these: docker-compose validates docker-compose.yml without a docker engine, nginx is the
# TLS-terminating proxy that docs/production.md describes and tests/test_tls_proxy.py runs.
ensure_test_packages() {
  local missing=()
  command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # The fault tests (tests/test_faults.py): an external sqlite3 shell, chattr and mkfs.ext4 on a loop device.
  command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
  command -v chattr >/dev/null 2>&1 && command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
  command -v losetup >/dev/null 2>&1 || missing+=(mount)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages for the tests: ${missing[*]}" >&2
    need_root apt-get update -qq
    need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The package starts nginx on port 80 where systemd runs; the tests start their own on loopback ports.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      need_root systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
  fi
}

ensure_venv() {
  local extra="${1:-}"
  local stamp=".venv/.installed-${extra:-base}"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    if [ -n "$extra" ]; then
      .venv/bin/python -m pip install -q -e ".[$extra]"
    else
      .venv/bin/python -m pip install -q -e .
    fi
    touch "$stamp"
  fi
}
