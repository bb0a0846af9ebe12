# Every set-up and every check is a target. `make demo` and `make test` build .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BOSS   := $(VENV)/bin/boss
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast services lint chart-lint crds operator bench bench-peers images push deploy need-registry need-helm clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt sdk/pyproject.toml operator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e sdk -e operator
	touch $@

install: $(STAMP) ## create .venv and install the SDK, the operator and the test tools

# command -> the Debian package that has it: the test services, and a real node with its images
SERVICES := prometheus-pushgateway:prometheus-pushgateway prometheus:prometheus chromium:chromium \
	containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables \
	buildah:buildah mmdebstrap:mmdebstrap docker-registry:docker-registry
services: ## install from Debian (root + apt): Prometheus, its Pushgateway, Chromium; containerd, runc, CNI plugins, buildah, mmdebstrap, docker-registry for a real node
	@missing=""; for s in $(SERVICES); do c=$${s%%:*}; p=$${s#*:}; \
	  command -v $$c >/dev/null 2>&1 || [ -x "$$c" ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null \
	      || echo "warning: could not install$$missing; the tests that need them will be skipped"; \
	  else echo "note:$$missing not installed (needs root + apt); the tests that need them will be skipped"; fi; fi

demo: install ## run the digits BOSS study on this machine and print the result
	$(BOSS) run examples/digits-study.yaml --run-dir runs/digits-demo --fresh

# Test files run in WORKERS processes (pytest-xdist, a file's tests together in one): the suite
# waits on subprocesses and on a control plane as much as it computes, so two workers on two
# cores take about 10 minutes instead of 14. Each worker starts its own services and cluster.
WORKERS ?= 2

test: install services cluster-bins images ## the whole test suite, slow end-to-end studies included (PYTEST_ARGS: more options)
	$(PY) -m pytest -m "slow or not slow" -n $(WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

test-fast: install services cluster-bins images ## the test suite without the slow end-to-end studies
	$(PY) -m pytest -n $(WORKERS) --dist loadfile

lint: install ## ruff over the code, tests and benchmarks
	$(VENV)/bin/ruff check .

chart-lint: install ## render the chart with Helm (default and every option) and validate it against Kubernetes' schemas
	$(PY) -m pytest tests/test_chart.py tests/test_crd.py -q

# Images without a Docker engine: buildah (Debian's 1.28), on a Debian bookworm base that
# mmdebstrap makes, all of it cached by content under $${BOSS_CACHE:-~/.cache/boss} (images/build.py says how).
# With Docker instead: docker build -f trainer-image/Dockerfile -t boss-trainer .  (likewise operator/)
IMAGES   ?= trainer operator
REGISTRY ?=
HELM     ?= $(shell command -v helm 2>/dev/null || echo .cache/k8s/bin/helm)
NAMESPACE ?= boss-system

images: services ## build the trainer and operator images with buildah (no Docker engine); prints sizes and build times
	$(PYTHON) images/build.py build $(IMAGES)

need-registry:
	@test -n "$(REGISTRY)" || { echo "make $(MAKECMDGOALS): name the registry: REGISTRY=host[:port][/path]"; exit 2; }
need-helm:
	@test -x "$(HELM)" || { echo "make deploy: needs helm on PATH (or .cache/k8s/bin/helm: make cluster-bins)"; exit 2; }

push: need-registry images ## push both images to REGISTRY=host[:port][/path] (plain HTTP only for 127.0.0.1/localhost)
	$(PYTHON) images/build.py push $(REGISTRY) $(IMAGES)

deploy: need-registry need-helm images ## build, push to REGISTRY, helm upgrade --install the chart with those images (HELM_ARGS: more --set)
	@set -e; sets=$$($(PYTHON) images/build.py push $(REGISTRY) trainer operator --helm-set); \
	echo "$(HELM) upgrade --install boss charts/boss-operator --namespace $(NAMESPACE) --create-namespace $$sets $(HELM_ARGS)"; \
	eval "$(HELM) upgrade --install boss charts/boss-operator --namespace $(NAMESPACE) --create-namespace $$sets $(HELM_ARGS)"

bench: install bench-peers ## benchmarks: BOSS vs the peers, distillation step cost, engine overhead (tables + bench/out/*.png)
	$(PY) bench/search_quality.py
	$(PY) bench/step_cost.py
	$(PY) bench/overhead.py

PEERS_METHODS ?= boss,sd,bo,random,tpe-boss,asha,pbt
bench-peers: install ## BOSS against Optuna (TPE, ASHA) and Ray Tune (PBT) on the report seeds of digits, motifs and shapes (hours on 2 cores)
	$(PY) -m pip install -q -r requirements-bench.txt
	for t in digits motifs shapes; do \
	  $(PY) bench/peers.py --task $$t --first-seed 2000 --seeds 10 --jobs 2 --methods "$(PEERS_METHODS)" || exit 1; \
	done

crds: install ## regenerate the BossStudy CRD (crds/ and the chart's copy) from the spec model
	$(PY) -m boss_operator.crd > crds/bossstudies.boss.automl.io.yaml
	cp crds/bossstudies.boss.automl.io.yaml charts/boss-operator/crds/

operator: install ## run the operator against the current kubeconfig's cluster
	$(PY) -m boss_operator

clean: ## remove run folders and caches (keeps .venv)
	rm -rf runs .pytest_cache .hypothesis

# real control plane (tests/k8s)
.PHONY: cluster-bins cluster
cluster-bins: ## build etcd, kube-apiserver, -controller-manager, -scheduler, kubelet, kube-proxy, kubectl, helm from Go modules (.cache/k8s/bin)
	bash tests/k8s/build.sh

cluster: install services cluster-bins images ## a local Kubernetes (real control plane, a real node pulling the images from a registry), S3, Pushgateway and the operator, in the foreground
	$(PY) tests/cluster_up.py
