# gpufed — the two commands are `make demo` and `make test`; everything else is a part of them.
# Every target installs what it needs through the project's own idempotent scripts (cached outside
# the checkout, linked into the git-ignored .tools/).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: help tools tools-k8s tools-peers tools-evm build crds lint unit e2e contracts contracts-build test bench bench-build demo demo-down clean

help: ## Show the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

tools: tools-k8s tools-evm ## Build/install every test tool (Kubernetes from Go modules, Foundry, solc).

tools-k8s: ## kube-apiserver, controller-manager, scheduler, kubelet, etcd, kwok, helm into .tools/bin; runc, containerd, CNI plugins, libfaketime from Debian.
	e2e/tools/build.sh

tools-evm: ## anvil, forge, cast and solc (solcjs) into .tools/bin.
	contracts/toolchain/install.sh

build: ## Build every binary (debug).
	$(CARGO) build --workspace --bins

crds: ## Regenerate the CRD YAML and the API reference (docs/api) from the Rust types.
	$(CARGO) run -q -p gpufed-crds --bin crdgen
	$(CARGO) run -q -p gpufed-crds --bin apidocs

lint: tools-k8s ## rustfmt check, clippy with warnings as errors, helm lint of both charts, the CUDA challenge kernel assembled by ptxas.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	charts/lint.sh
	gpu-probe/tools/check-ptx.sh

unit: ## Unit, property and schema tests (no clusters).
	$(CARGO) test --workspace --exclude gpufed-e2e

e2e: tools-k8s contracts-build build ## Tests against real apiservers started by the e2e harness.
	$(CARGO) test -p gpufed-e2e --no-fail-fast -- --test-threads=2

contracts: ## Foundry tests of the EVM contracts (unit, fuzz, invariant, gas snapshot).
	contracts/test.sh

contracts-build: tools-evm ## Compile the contracts (artifacts in contracts/out, used by e2e and the demo).
	cd contracts && ../.tools/bin/forge build --offline --use ../.tools/bin/solc

test: lint unit contracts e2e ## Everything CI runs.
	@echo "make test: all green"

BENCH_DIR := $(or $(CARGO_TARGET_DIR),target)/bench
# Job counts of the scale run (one hub, 1,000 simulated members); a size that does not fit is
# reported with the reason and the run keeps what it measured before it.
SCALE_JOBS ?= 1000,10000,100000
# The bench runs release builds of everything it starts (the hub, agents, gpu-probe, the kubectl
# plugin) and of itself: GPUFED_E2E_PROFILE tells the harness which of cargo's profiles to start.
BENCH_RUN := GPUFED_E2E_PROFILE=release $(CARGO) run --release -q -p gpufed-e2e --bin gpufed-bench --
tools-peers: ## Also build Kueue (the peer benchmark of make bench).
	e2e/tools/build.sh --with-peers

bench-build: ## Release builds of every binary make bench starts.
	$(CARGO) build --release --bins -p gpufed-operator -p kubectl-gpufed -p gpu-probe -p gpufed-e2e

bench: tools-peers contracts bench-build ## Scheduler criterion bench, e2e throughput vs the apiserver's ceiling, peer run vs Kueue MultiKueue, 1,000-member scale run, agent with 10,000 pods, pool utilisation on a mixed workload, settlement gas → docs/benchmarks.md; 30-minute chaos run → docs/reliability.md.
	mkdir -p $(BENCH_DIR)
	$(CARGO) bench -p gpufed-scheduler --bench schedule
	contracts/test.sh -- --match-path 'test/JobEscrowGas.t.sol' -vv | tee $(BENCH_DIR)/gas.txt
	FOUNDRY_PROFILE=deep contracts/test.sh -- --no-match-path 'test/JobEscrowGas.t.sol' | tee $(BENCH_DIR)/contracts-deep.txt
	$(BENCH_RUN) throughput --jobs 1500 --open-jobs 200 --out $(BENCH_DIR)/throughput.json
	$(BENCH_RUN) peer --jobs 80 --out $(BENCH_DIR)/peer.json
	$(BENCH_RUN) scale --members 1000 --jobs $(SCALE_JOBS) --out $(BENCH_DIR)/scale.json
	$(BENCH_RUN) agent --pods 10000 --out $(BENCH_DIR)/agent.json
	$(BENCH_RUN) utilisation --out $(BENCH_DIR)/utilisation.json
	$(BENCH_RUN) chaos --profile long --out $(BENCH_DIR)/chaos-history.json --table docs/reliability.md
	$(BENCH_RUN) report --criterion $(or $(CARGO_TARGET_DIR),target)/criterion \
	  --throughput $(BENCH_DIR)/throughput.json --gas $(BENCH_DIR)/gas.txt --peer $(BENCH_DIR)/peer.json \
	  --scale $(BENCH_DIR)/scale.json --agent $(BENCH_DIR)/agent.json \
	  --utilisation $(BENCH_DIR)/utilisation.json --out docs/benchmarks.md

demo: tools-k8s contracts-build build ## Start a local federation (hub, 3 providers, anvil), run the sample jobs, narrate; leaves it running.
	$(CARGO) run -q -p gpufed-e2e --bin gpufed-demo -- up

demo-down: ## Stop the demo federation and remove .demo/.
	$(CARGO) run -q -p gpufed-e2e --bin gpufed-demo -- down

clean: ## Remove build outputs of the checkout (caches outside it are kept).
	$(CARGO) clean
	rm -rf .tools contracts/out contracts/cache
