# Charla — the two commands a new machine needs are `make run` and `make test`.
GO ?= go
ADDR ?= 127.0.0.1:8080
DATA ?= ./data
SOAP_ADDR ?= 127.0.0.1:8081
GRAPH_ADDR ?= 127.0.0.1:8082
# Development secrets shared by the engine, the fake Graph API and
# `charla simulate-customer` under `make run`; never use them elsewhere.
WA_SECRET ?= dev-whatsapp-app-secret
WA_VERIFY ?= dev-whatsapp-verify-token
WA_TOKEN ?= dev-whatsapp-token
WA_PHONE ?= 1001

# run-cluster's database and NATS.
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
NATS_URL ?= nats://127.0.0.1:4222

.PHONY: run run-cluster test test-pg-restart build vet bench bench-pinned clean

## run: start the engine on $(ADDR) with the embedded store under $(DATA), dev auth, the
## inventory simulator on $(SOAP_ADDR) and the fake WhatsApp Graph API on $(GRAPH_ADDR)
## beside it (stopped when the engine exits), with matching WhatsApp secrets: play the
## customer with `go run ./cmd/charla simulate-customer --whatsapp-app-secret $(WA_SECRET)`.
## One binary is built first: `go run` would not pass signals on to the simulators.
run:
	@set -e; sim=; graph=; dir=$$(mktemp -d); \
	trap 'for p in $$sim $$graph; do kill $$p 2>/dev/null || true; wait $$p 2>/dev/null || true; done; rm -rf "$$dir"' EXIT; \
	trap 'exit 130' INT TERM; \
	$(GO) build -o "$$dir/charla" ./cmd/charla; \
	"$$dir/charla" soapsim --addr $(SOAP_ADDR) & sim=$$!; \
	"$$dir/charla" fakegraph --addr $(GRAPH_ADDR) --webhook-url http://$(ADDR)/webhooks/whatsapp \
		--whatsapp-app-secret $(WA_SECRET) --whatsapp-token $(WA_TOKEN) & graph=$$!; \
	"$$dir/charla" serve --addr $(ADDR) --data-dir $(DATA) --auth-mode dev --log-format console --soap-url http://$(SOAP_ADDR) \
		--whatsapp-app-secret $(WA_SECRET) --whatsapp-verify-token $(WA_VERIFY) --whatsapp-token $(WA_TOKEN) \
		--whatsapp-phone-number-id $(WA_PHONE) --whatsapp-graph-url http://$(GRAPH_ADDR)/v21.0

## run-cluster: three engine nodes of one cluster on 127.0.0.1:8181, :8182 and :8183 (any
## serves any conversation), dev auth, PostgreSQL at $(DATABASE_URL) (migrated first) and
## NATS with JetStream at $(NATS_URL): start it with `nats-server -js` when it is not
## answering (Debian: apt-get install nats-server). Ctrl-C stops all three, each handing
## its shards over.
run-cluster:
	@set -e; pids=; dir=$$(mktemp -d); \
	trap 'for p in $$pids; do kill $$p 2>/dev/null || true; done; for p in $$pids; do wait $$p 2>/dev/null || true; done; rm -rf "$$dir"' EXIT; \
	trap 'exit 130' INT TERM; \
	$(GO) build -o "$$dir/charla" ./cmd/charla; \
	"$$dir/charla" migrate --database-url '$(DATABASE_URL)'; \
	for i in 1 2 3; do \
		"$$dir/charla" serve --addr 127.0.0.1:818$$i --data-dir "$$dir/n$$i" --auth-mode dev --log-format console \
			--database-url '$(DATABASE_URL)' --cluster-nats-url '$(NATS_URL)' --cluster-node-id n$$i & pids="$$pids $$!"; \
	done; \
	wait

## test: go vet, then every test with the race detector, then a short fuzz of the
## webhook parser
test: vet
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 10s ./whatsapp/

## test-pg-restart: the outage test that stops and starts the machine's PostgreSQL;
## run it alone (CI does, after `make test`): nothing else may use the server meanwhile
test-pg-restart:
	CHARLA_TEST_PG_STOP=1 $(GO) test -race -count=1 -run TestRealServerStop -v ./actors/

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...

## build: binaries in ./bin
build:
	mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

## bench: every bench scenario at small sizes against a fresh engine (a few minutes);
## see bench/README.md for the full-size runs
bench: build
	./bin/charla-bench suite --addr 127.0.0.1:18080 --out-dir bench-results \
		--soap-admin http://127.0.0.1:18081 --soapsim-cmd "./bin/charla soapsim --addr 127.0.0.1:18081" \
		--engine-cmd "./bin/charla serve --addr 127.0.0.1:18080 --auth-mode dev --data-dir $$(mktemp -d) --log-level warn --soap-url http://127.0.0.1:18081"

## bench-pinned: the steady scenario as the goals are measured (DESIGN.md): the engine on
## core $(ENGINE_CPUS) with GOMAXPROCS=1, the load on core $(LOAD_CPUS), the embedded store
## on disk under $(BENCH_DATA) (not tmpfs: a tmpfs fsync costs nothing)
ENGINE_CPUS ?= 0
LOAD_CPUS ?= 1
BENCH_DATA ?= ./bench-data
bench-pinned: build
	mkdir -p $(BENCH_DATA) bench-results
	dir=$$(mktemp -d $(BENCH_DATA)/steady-XXXXXX) && \
	./bin/charla-bench steady --addr 127.0.0.1:18090 --conns 1000 --convs 100 --rate 2000 --duration 20s \
		--engine-cpus $(ENGINE_CPUS) --load-cpus $(LOAD_CPUS) \
		--out bench-results/steady-pinned.json --plot bench-results/steady-pinned.html \
		--engine-cmd "./bin/charla serve --addr 127.0.0.1:18090 --auth-mode dev --log-level warn --data-dir $$dir"

clean:
	rm -rf bin bench-results bench-data
