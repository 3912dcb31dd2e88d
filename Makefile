# slsfwd: `make run` starts the agent with the console sink; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-unit bench system-deps clean deb

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Debian packages the tests need (the real rsyslog and logger); installed only if missing.
system-deps:
	@command -v rsyslogd >/dev/null 2>&1 && command -v logger >/dev/null 2>&1 || { \
	  echo "installing Debian packages: rsyslog rsyslog-relp bsdutils"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq rsyslog rsyslog-relp bsdutils >/dev/null; }

run: $(STAMP)
	@mkdir -p .run/spool
	@echo "slsfwd: console sink on 127.0.0.1:11111 (Ctrl-C stops it). In another shell, send a test line:"
	@echo '  echo "0.1 sys_tag $$(date +%s) 127.0.0.1 myhost user.notice 0 todo-list - -  hello from make run" > /dev/tcp/127.0.0.1/11111   # bash' 
	$(VENV)/bin/slsfwd run --config packaging/console.toml

test: $(STAMP) system-deps
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not e2e"

bench: $(STAMP)
	$(PY) -m bench.bench_hotpath --pin
	$(PY) -m bench.bench_spool --pin

clean:
	rm -rf $(VENV) .run .pytest_cache .hypothesis build dist *.egg-info

# dist/slsfwd_<version>_<arch>.deb: the agent and its dependencies in a venv at /opt/slsfwd (packaging/README.md).
deb:
	packaging/deb/build.sh
