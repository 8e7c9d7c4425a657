# kres-operator — build, run, test.
# `make run`  : a working resolver on loopback from manifests/examples/config.yaml
# `make test` : installs what the tests need (Debian packages, Go-built k8s tooling) and runs everything

SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := knot-resolver knot-resolver-module-http supervisor knot knot-dnsutils dnsutils dnsperf nftables conntrack iproute2 jq systemd
# The container image (`make image`) and its test: Debian's own image tools, podman with runc.
APT_PACKAGES += mmdebstrap umoci skopeo podman runc
EXAMPLE := manifests/examples/config.yaml

.PHONY: all build deps k8s-tools image test test-rust docs-check lint fmt run bench fuzz

all: build

build:
	$(CARGO) build --workspace --all-targets

# Debian packages the tests and `make run` need; installed only when something is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# etcd, kube-apiserver, kube-controller-manager, kube-proxy, kubectl and helm built from Go modules into a
# cache outside the repo (versions: tests/k8s/versions.env); a no-op when already built.
k8s-tools:
	tests/k8s/build-tools.sh

# The container image from Debian packages + the release binaries (image/build.sh, docs/image.md):
# ${CARGO_TARGET_DIR:-target}/image/kres-operator.oci.tar and kres-operator.docker.tar.
# Cached under /var/cache/kres-operator/image, keyed on every input; needs root.
image: deps
	CARGO="$(CARGO)" image/build.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The host integration tests run the kres-operator binary: build it first. tests/tests/image.rs
# runs the image: `test` builds it (cached) before.
test-rust:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# Runs the commands of docs/host-quickstart.md (make run, kdig, status, ps, ls, the systemd unit)
# as root in private network/mount/PID namespaces; ~5 s once `make run`'s build is cached.
docs-check: deps
	tests/docs/check-host-quickstart.sh

test: deps k8s-tools lint image test-rust docs-check

fmt:
	$(CARGO) fmt --all

# A working resolver on loopback, in the foreground (Ctrl-C stops workers and supervisord).
# As root: rundir /run/kres-operator, cache /var/cache/knot-resolver, workers as knot-resolver.
# As an ordinary user: rundir and cache in $XDG_RUNTIME_DIR (private to the user), nothing in /tmp.
# Built like `make test` builds it (the whole workspace's bins, one feature set), so `make run`
# after `make test` (and the docs check inside it) compiles nothing again.
OPERATOR = $(CARGO) build -q --workspace --bins && "$${CARGO_TARGET_DIR:-target}/debug/kres-operator"
run: deps
	@if [ "$$(id -u)" = 0 ]; then \
	  $(OPERATOR) host --config $(EXAMPLE); \
	else \
	  case "$$XDG_RUNTIME_DIR" in /*) ;; *) echo "make run: XDG_RUNTIME_DIR is not set; run as root or set it to a private directory" >&2; exit 1;; esac; \
	  sed "s|^  storage: .*|  storage: $$XDG_RUNTIME_DIR/kres-operator-cache|" $(EXAMPLE) > "$$XDG_RUNTIME_DIR/kres-operator-example.yaml"; \
	  $(OPERATOR) host --config "$$XDG_RUNTIME_DIR/kres-operator-example.yaml"; \
	fi

# Benchmarks (not tests; print numbers, see docs/BENCHMARKS.md): validate + render time; host mode
# change -> converged for N = 1, 2, 4, 8, queries lost during a rollout, idle RSS, start-up time;
# HTTP API latency and /metrics scrape time with 8 workers; zero loss (all NOERROR) at 20k qps while
# workers restart on shared sockets (asserted), against per-worker SO_REUSEPORT binds.
# Kubernetes mode: 50 KnotResolvers applied at once (time to Available, API requests by verb,
# steady-state writes over a minute, from the apiserver audit log; needs `make k8s-tools`).
bench: deps k8s-tools
	$(CARGO) bench -p kres-crd --bench render
	$(CARGO) build --release -p kres-operator --bin kres-operator
	$(CARGO) test --release -p kres-tests --test host_bench -- --ignored --nocapture --test-threads=1
	$(CARGO) test --release -p kres-tests --test api_bench -- --ignored --nocapture --test-threads=1
	$(CARGO) test --release -p kres-operator --test sockets -- --ignored --nocapture --test-threads=1
	$(CARGO) build --release -p kres-operator --bins
	$(CARGO) test --release -p kres-tests --test k8s_ops bench_ -- --ignored --nocapture --test-threads=1

# The property tests with many more cases than `make test` runs (same fixed seeds).
fuzz: deps
	KRES_PROP_CASES=20000 $(CARGO) test --release -p kres-crd --test parse_properties -- --nocapture
	KRES_PROP_CASES=5000 $(CARGO) test --release -p kres-tests --test lua_string_property -- --nocapture
	KRES_PROP_CASES=5000 $(CARGO) test --release -p kres-operator --test supervisord_conf generated_values -- --nocapture
