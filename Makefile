# resalloc: `make run` and `make test` do all set-up on a fresh Debian or Ubuntu machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

DEBS := libssh2-1-dev libsqlite3-dev pkg-config docker.io openssh-server openssh-client busybox-static tmux procps iproute2 wrk \
	curl python3-venv openssh-sftp-server rsync chromium postgresql openssl
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
KEY := resources/resalloc.pem
TESTBED := scripts/testbed

.PHONY: help deps keys build lint format test api-check run bench stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## install the Debian packages the project needs, when missing
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v swift >/dev/null || { echo "Swift 6 is not on PATH; install a Swift 6 toolchain (swift.org) first" >&2; exit 1; }

keys: $(KEY) ## create the master's SSH key (Ed25519) when absent

$(KEY):
	@mkdir -p $(dir $@)
	ssh-keygen -q -t ed25519 -N '' -C resalloc-master -f $@
	chmod 600 $@ $@.pub

build: deps ## build everything (debug)
	swift build

SWIFT_SOURCES := Sources Tests Benchmarks Package.swift

lint: ## check the formatting (.swift-format, Hummingbird's style); make format fixes most
	swift format lint --strict --configuration .swift-format -r $(SWIFT_SOURCES)

format: ## reformat the Swift sources in place
	swift format format --in-place --configuration .swift-format -r $(SWIFT_SOURCES)

test: deps keys lint ## check formatting, the API against its document, every test, on real local machines (needs root)
	@$(SUDO) true
	$(SUDO) $(TESTBED) start 12 --key $(KEY).pub --real m10 >/dev/null
	$(SUDO) $(TESTBED) postgres-start >/dev/null
	swift build --build-tests
	$(SUDO) scripts/api-check && scripts/run-tests; status=$$?; $(SUDO) $(TESTBED) stop; exit $$status

api-check: deps keys ## Schemathesis against a live master: the server and openapi.yaml agree (needs root)
	swift build
	$(SUDO) scripts/api-check; status=$$?; $(SUDO) $(TESTBED) stop; exit $$status

run: build keys ## start a local test machine and the master, ready for resalloc calls
	$(SUDO) scripts/run

BENCH ?= all
bench: deps ## benchmarks on real local machines; prints numbers (BENCH=transport|master|shell|cleanup|reach|pool|store|jobs|first|burst|rungap|shell-deployed|cp-deployed)
	swift build -c release --product resalloc-master
	swift build -c release --product resalloc
	swift build -c release --product resalloc-bench
	$(SUDO) $(TESTBED) postgres-start >/dev/null
	$(SUDO) stdbuf -oL .build/release/resalloc-bench $(BENCH); status=$$?; $(SUDO) $(TESTBED) stop; exit $$status

stop: ## stop the local test machines
	$(SUDO) $(TESTBED) stop

clean: stop ## remove build output (keeps the key)
	rm -rf .build
