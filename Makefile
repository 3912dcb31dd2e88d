# slsfwd: `make run` starts the agent with the console sink; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-unit test-system bench system-deps clean deb

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Debian packages the tests need, each installed only if it is missing (as root, or with sudo):
#   rsyslog, rsyslog-relp, bsdutils (logger): the end-to-end tests run Debian's real rsyslog;
#   prometheus (for promtool; no recommends): the alert rules' own tests;
#   systemd (systemd-analyze, systemd-socket-activate): the unit's exposure, socket activation;
#   systemd-container (systemd-nspawn), mmdebstrap, packer: tests/system boots Debian in a container,
#     installs the .deb there and runs the Packer template's provisioners (packer evaluates it);
#   python3-venv, binutils (strip), git: `make deb` and the previous release's .deb;
#   openssl: TLS test certificates; procps: ps and friends.
SYSTEM_PACKAGES := rsyslog rsyslog-relp bsdutils prometheus systemd systemd-container mmdebstrap packer \
                   python3-venv binutils git openssl procps

system-deps:
	@missing=$$(for package in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Status}\n' $$package 2>/dev/null | grep -qx installed || echo $$package; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

run: $(STAMP)
	@mkdir -p .run/spool
	@echo "slsfwd: console sink on 127.0.0.1:11111 (Ctrl-C stops it). In another shell, send a test line:"
	@echo '  echo "0.1 sys_tag $$(date +%s) 127.0.0.1 myhost user.notice 0 todo-list - -  hello from make run" > /dev/tcp/127.0.0.1/11111   # bash' 
	$(VENV)/bin/slsfwd run --config packaging/console.toml

# Everything, tests/system included (root: it boots containers; its cache is /var/cache/slsfwd-tests).
test: system-deps $(STAMP)
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not e2e and not system and not slow"

# Only the booted-system tests (README, "Installing on ECS images").
test-system: system-deps $(STAMP)
	$(PY) -m pytest -q -m system

bench: $(STAMP)
	$(PY) -m bench.bench_hotpath --pin
	$(PY) -m bench.bench_spool --pin

clean:
	rm -rf $(VENV) .run .pytest_cache .hypothesis build dist *.egg-info

# dist/slsfwd_<version>_<arch>.deb: the agent and its dependencies in a venv at /opt/slsfwd (packaging/README.md).
deb:
	packaging/deb/build.sh
