# Sluice — `make run` starts a complete single-node Sluice, `make test` runs every test.
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c
GO      ?= go
BIN     := bin/sluice
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# docker compose (v2 plugin) or docker-compose (v1), whichever is installed.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
DEMO    := $(COMPOSE) -f deploy/docker-compose.yml -p sluice-demo

.PHONY: build run test lint fuzz mutate power power-short bench bench-overload cluster cluster-down chaos image demo demo-down demo-test demo-secrets clean certs

build: ## static, trimmed binary in bin/sluice
	@echo "== go build $(BIN): the first build compiles every dependency (nats-server, Prometheus, zap...) and takes minutes on 2 cores; later builds reuse Go's build cache and take seconds"
	@start=$$(date +%s); CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sluice && echo "== built $(BIN) in $$(( $$(date +%s) - start ))s"

run: build ## single-node Sluice: broker, gateway on :8080, demo families (configs/dev.yaml)
	@echo "== starting $(BIN) dev --config configs/dev.yaml (Ctrl-C stops it)"
	./$(BIN) dev --config configs/dev.yaml

test: ## every test, with the race detector
	$(GO) test -race -count=1 -timeout 15m ./...

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags chaos ./test/
	$(GO) vet -tags demo ./test/
	$(GO) vet -tags fuse ./...

FUZZTIME ?= 30s

fuzz: ## every fuzz target in turn, FUZZTIME each (default 30s; make fuzz FUZZTIME=5m); a failing input is kept in the package's testdata/fuzz
	@echo "== fuzz FuzzParseBatch (./gateway/) for $(FUZZTIME)"
	$(GO) test -run '^$$' -fuzz '^FuzzParseBatch$$' -fuzztime $(FUZZTIME) ./gateway/
	@echo "== fuzz FuzzPublish (./gateway/) for $(FUZZTIME)"
	$(GO) test -run '^$$' -fuzz '^FuzzPublish$$' -fuzztime $(FUZZTIME) ./gateway/
	@echo "== fuzz FuzzPublishBatch (./gateway/) for $(FUZZTIME)"
	$(GO) test -run '^$$' -fuzz '^FuzzPublishBatch$$' -fuzztime $(FUZZTIME) ./gateway/
	@echo "== fuzz FuzzLoad (./cmd/sluice/internal/config/) for $(FUZZTIME)"
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./cmd/sluice/internal/config/

mutate: ## mutation testing of the durable path with gremlins (test/mutate.sh, .gremlins.yaml; ~40 min, not part of test or CI): a score per package, results in run/mutate
	nice -n 10 test/mutate.sh

bench: build ## side by side: HTTP floor, raw JetStream, Sluice single and batch, end to end (single node and R3; ~6 min), then the Go benchmarks
	./$(BIN) bench compare --out bench-results
	$(GO) test -run '^$$' -bench . -benchtime 2000x -count 1 ./pkg/... ./gateway/...

bench-overload: build ## overload benchmark: 10x then 2x the families' capacity, 60 s each (reports in bench-results/)
	./$(BIN) bench overload --factor 10 --log-level warn
	./$(BIN) bench overload --factor 2 --log-level warn

cluster: build ## 3 brokers (R3), 2 gateways (:8080, :8081), demo families, as processes (run/cluster)
	deploy/cluster.sh up

cluster-down: ## stop the cluster started by make cluster
	deploy/cluster.sh down

# Every fault scenario with a row in the checker table (make chaos).
CHAOS_TESTS := TestFaults|TestRollingRestartUnderLoad|TestChaos|TestPauses|TestMembership|TestNetworkFaults|TestCorruptedStore|TestPowerLoss|TestDiskFaults

chaos: ## every fault scenario (process and in-process clusters: kills, pauses, networks, corruption, membership; power and disks if root with /dev/fuse), ~1 h; prints one checker table (run/chaos/table.md)
	@mkdir -p run/chaos && rm -f run/chaos/table.md
	@tags=chaos; if [ "$$(id -u)" = 0 ] && [ -c /dev/fuse ]; then tags="chaos fuse"; else echo "FUSE not usable (root and /dev/fuse): power-loss and disk scenarios left out"; fi; \
	SLUICE_CHAOS_TABLE=$(CURDIR)/run/chaos/table.md $(GO) test -tags "$$tags" -count=1 -timeout 120m -run '$(CHAOS_TESTS)' -v ./test/ 2>&1 | grep -v 'logger.go'; \
	status=$$?; echo; cat run/chaos/table.md 2>/dev/null; exit $$status

power: ## power loss and disk faults (needs root and /dev/fuse): brokers' stores on a FUSE file system that drops unsynced writes; every scenario with the checker table (minutes)
	$(GO) test -tags fuse -race -count=1 -timeout 5m ./internal/testkit/powerfs/
	$(GO) test -tags fuse -count=1 -timeout 30m -run 'TestPowerLoss|TestDiskFaults|TestStoreFailed' -v ./test/ 2>&1 | grep -v 'logger.go'

power-short: ## CI's subset of make power: powerfs itself, all three brokers powered off at once, a failed store
	$(GO) test -tags fuse -race -count=1 -timeout 5m ./internal/testkit/powerfs/
	$(GO) test -tags fuse -count=1 -timeout 10m -run 'TestPowerLoss/power_off_all_three_at_once|TestStoreFailed' -v ./test/ 2>&1 | grep -v 'logger.go'

image: build ## container image sluice:dev, FROM scratch around bin/sluice
	docker build -f deploy/Dockerfile -t sluice:dev .

demo-secrets: build ## the compose demo's certificates, nkeys and route password in deploy/secrets/ (git-ignored; kept if present)
	deploy/demo-secrets.sh

demo: image demo-secrets ## the compose cluster: 3 brokers, 2 gateways (:8080, :8081), demo workers, bus secured; waits until ready
	$(DEMO) up -d
	deploy/demo-wait.sh
	@echo "Sluice demo up: curl -X POST --data-binary 'hello' http://127.0.0.1:8080/v1/topics/orders/messages"
	@echo "state: curl -s http://127.0.0.1:8081/v1/topics/orders"
	@echo "watch: $(COMPOSE) -f deploy/docker-compose.yml -p sluice-demo logs -f billing"
	@echo "load: $(COMPOSE) -f deploy/docker-compose.yml -p sluice-demo --profile loadgen up loadgen    stop: make demo-down"

demo-down: ## stop and remove the demo's containers, network and volumes
	$(DEMO) --profile loadgen --profile monitoring down -v --remove-orphans

demo-test: image demo-secrets ## end-to-end fault test against the compose cluster (docker kill, network cut, gateway restart, the stream leader paused, a bad network on it)
	COMPOSE="$(COMPOSE)" $(GO) test -tags demo -count=1 -timeout 15m -run TestDemo -v ./test/ 2>&1 | grep -v 'logger.go'

certs: build ## development CA and node certificate for TLS in certs/ (ca.pem, node.pem and keys); keeps existing files
	./$(BIN) certs --out certs

clean:
	rm -rf bin data
