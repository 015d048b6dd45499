# Charla — the two commands a new machine needs are `make run` and `make test`.
GO ?= go
ADDR ?= 127.0.0.1:8080
DATA ?= ./data
SOAP_ADDR ?= 127.0.0.1:8081

.PHONY: run test test-pg-restart build vet bench bench-pinned clean

## run: start the engine on $(ADDR) with the embedded store under $(DATA), dev auth, and
## the inventory simulator on $(SOAP_ADDR) beside it (stopped when the engine exits).
## One binary is built first: `go run` would not pass signals on to the simulator.
run:
	@set -e; sim=; dir=$$(mktemp -d); \
	trap 'if [ -n "$$sim" ]; then kill $$sim 2>/dev/null || true; wait $$sim 2>/dev/null || true; fi; rm -rf "$$dir"' EXIT; \
	trap 'exit 130' INT TERM; \
	$(GO) build -o "$$dir/charla" ./cmd/charla; \
	"$$dir/charla" soapsim --addr $(SOAP_ADDR) & sim=$$!; \
	"$$dir/charla" serve --addr $(ADDR) --data-dir $(DATA) --auth-mode dev --log-format console --soap-url http://$(SOAP_ADDR)

## test: go vet, then every test with the race detector
test: vet
	$(GO) test -race -count=1 -timeout 20m ./...

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
