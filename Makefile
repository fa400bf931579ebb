# agentcred — the front door. `make help` lists the targets.

# Tool versions, pinned. Tools are built from the Go module proxy into bin/.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
SETUP_ENVTEST_DIR = $(shell pwd)/hack

LOCALBIN ?= $(shell pwd)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)

# The real kube-apiserver and etcd, built from source on first use (see hack/controlplane.sh).
KUBEBUILDER_ASSETS ?=

# -p 1: one test binary at a time. Several packages start their own kube-apiserver and etcd;
# run side by side on 2 cores, their etcds starve each other of fsyncs and requests time out.
GO_TEST_FLAGS ?= -race -count=1 -p 1 -timeout 30m

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD, RBAC and webhook manifests under config/ and copy them into the Helm chart.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	go run ./hack/crdmeta config/crd/bases/auth.agrenting.io_agentcredentials.yaml=63
	$(CONTROLLER_GEN) rbac:roleName=manager-role webhook paths="./controllers/..." paths="./webhook/..."
	@# The Helm chart renders the same objects (test/helm): it gets copies.
	cp config/crd/bases/*.yaml charts/agentcred/crds/
	cp config/rbac/role.yaml charts/agentcred/files/role.yaml
	cp config/webhook/manifests.yaml charts/agentcred/files/webhook.yaml
	cp config/prometheus/rules.yaml charts/agentcred/files/rules.yaml

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: docs
docs: manifests ## Generate docs/crd-reference.md from the CRDs.
	go run ./hack/crdref config/crd/bases/auth.agrenting.io_agentcredentials.yaml config/crd/bases/auth.agrenting.io_identityclaims.yaml > docs/crd-reference.md

.PHONY: verify
verify: generate manifests docs ## Regenerate everything generated (deepcopy, CRDs, RBAC, webhook, CRD reference) and fail if the tree changed: generated files must be committed fresh.
	@if ! git diff --exit-code --stat; then echo "verify: generated files are stale; run 'make generate manifests docs' and commit" >&2; exit 1; fi
	@if [[ -n "$$(git status --porcelain --untracked-files=all -- api config docs charts)" ]]; then \
		git status --porcelain --untracked-files=all -- api config docs charts; echo "verify: generation produced untracked files; commit them" >&2; exit 1; fi

.PHONY: docs-check
docs-check: ## Check the docs against the code: flags, make targets, paths, CLI commands, error codes and their statuses, metric names, the tested proxy configs, the generated CRD reference.
	go test -count=1 ./test/docs/

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: controlplane
controlplane: ## Build (once) the kube-apiserver and etcd used by tests and make run; prints their directory.
	@hack/controlplane.sh

.PHONY: run
run: manifests generate fmt vet ## Run agentcred locally: on an embedded kube-apiserver + etcd, or on the cluster in KUBECONFIG if it answers. ARGS=… passes flags.
	go build -o $(LOCALBIN)/agentcred-local ./cmd/agentcred-local
	@# Run the binary, not `go run`: go run exits 1 when a signal reaches it, even after agentcred-local stopped cleanly.
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane.sh)}" $(LOCALBIN)/agentcred-local $(ARGS)

.PHONY: test
test: manifests generate fmt vet ## Run every test, integration tests included, against a real kube-apiserver and etcd.
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane.sh)}" go test $(GO_TEST_FLAGS) ./...

.PHONY: test-short
test-short: ## The inner loop: every test that needs no control plane (pure packages, fake-client tables), in about a minute.
	go test -short -count=1 ./...

.PHONY: mutate
mutate: ## Mutation-test the pure packages (gremlins, pinned) in a temporary copy; fails below 95% efficacy / 90% coverage. PKGS="internal/tenancy ..." to pick.
	hack/mutate.sh $(PKGS)

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 10s).
	hack/fuzz.sh $${FUZZTIME:-10s}

.PHONY: bench
bench: ## Run the in-process benchmarks and a short loopback load run with ratios to a bare handler (docs/benchmarks.md).
	go test -run '^$$' -bench . -benchmem -count $${COUNT:-5} ./internal/...
	go run ./hack/authload --credentials 100000 --duration $${LOAD_DURATION:-2s} --runs $${LOAD_RUNS:-3}

.PHONY: bench-scale
bench-scale: ## Measure revocation latency, reconcile throughput and unrelated-Secret memory against a real API server; AGENTCRED_SCALE_N=10000 for more.
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane.sh)}" go test -run '^$$' -bench . -benchtime 1x -timeout 60m ./test/scale/

.PHONY: flood
flood: ## The flood suite (also part of make test): the auth endpoint's HTTP and gRPC listeners flooded from many loopback sources, and hostile credentials and workloads against the manager; asserts the memory budgets and that another client is served. Bounded in count and time.
	go test -count=1 -v -run 'Flood|PerSource|HTTPConnection|HeaderList|Slot|Displaces|TrustedReserve' ./internal/authserver/ ./internal/listener/
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane.sh)}" go test -count=1 -run '^$$' -bench 'HostileObjects' -benchtime 1x -timeout 30m ./test/scale/

.PHONY: soak
soak: ## 60 s of load against /auth/verify while 100 credentials rotate: no 5xx, no valid key refused, no failed connection; prints the throughput (docs/reliability.md). AGENTCRED_SOAK_DURATION=… to change.
	AGENTCRED_SOAK=1 KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane.sh)}" go test -count=1 -v -timeout 30m -run TestSoakUnderRotation ./test/soak/

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the three binaries into bin/: manager, agentcred-local (make run), kubectl-agentcred (put bin/ on PATH for the plugin).
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/agentcred-local ./cmd/agentcred-local
	go build -o $(LOCALBIN)/kubectl-agentcred ./cmd/kubectl-agentcred

##@ Deployment

.PHONY: install
install: manifests ## Install the CRD into the cluster in ~/.kube/config.
	kubectl apply --server-side -f config/crd/bases

.PHONY: deploy
deploy: manifests ## Deploy agentcred (config/default) to the cluster; OVERLAY=overlays/cert-manager etc. for variants.
	kubectl apply --server-side -k config/$${OVERLAY:-default}

.PHONY: undeploy
undeploy: ## Remove agentcred (and every AgentCredential with it) from the cluster.
	kubectl delete --ignore-not-found -k config/$${OVERLAY:-default}

.PHONY: docker-build
docker-build: ## Build the image (needs a Docker engine): IMG=agentcred:dev.
	docker build -t $${IMG:-agentcred:dev} .

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(CONTROLLER_GEN): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $(CONTROLLER_GEN)

$(GOLANGCI_LINT): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/golangci-lint $(GOLANGCI_LINT)
