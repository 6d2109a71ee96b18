#!/usr/bin/env bash
# Runs every test: installs what is missing (Debian packages prometheus and prometheus-alertmanager, for the tests
# also docker-compose, nginx and openssl; a venv with the project and its test dependencies), checks lint, then
# type-checks exporter/ (mypy), runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_debian_packages
ensure_test_packages
ensure_venv test
.venv/bin/ruff check exporter tests bench scripts examples
.venv/bin/mypy  # what and how: [tool.mypy] in pyproject.toml
.venv/bin/python -m pytest -q "$@"
