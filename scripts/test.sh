#!/usr/bin/env bash
# The test command README.md gives a new user (and the one CI runs through .ci/run): installs what the tests need
# on a fresh machine, then runs the whole suite.
#   - a venv in .venv with torch pinned to 2.13.0 (a CPU build where the machine provides one, the usual CUDA build
#     from PyPI elsewhere: a bare `torch` requirement would pull the newest multi-GB CUDA build), the project and its
#     test extras (pytest, Playwright's Python driver);
#   - Debian's Chromium for the editor's end-to-end tests (Playwright drives /usr/bin/chromium; it never downloads
#     a browser);
#   - pytest runs everything, including the editor's `node --test` unit tests (tests/web/).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/server -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[test]'
# spandrel without its torchvision requirement (see pyproject.toml)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps spandrel==0.4.2

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the editor tests"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

exec .venv/bin/python -m pytest -q "$@"
