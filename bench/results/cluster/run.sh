#!/bin/sh
# Figures of bench/results/cluster: 1 node vs 3 nodes (steady) and node-kill,
# engines pinned to core 0, the bench to core 1, one PostgreSQL, one NATS.
set -u
B=${B:-/tmp/cb}            # charla and charla-bench built here
OUT=${OUT:-/work/main/bench/results/cluster}
PG=postgres://postgres@127.0.0.1:5432
run=$(date +%s)
db() { createdb -h 127.0.0.1 -U postgres "$1" && $B/charla migrate --database-url "$PG/$1?sslmode=disable" >/dev/null; }
tmpl() { echo "$B/charla serve --addr {addr} --auth-mode dev --log-level warn --database-url '$PG/$1?sslmode=disable' --cluster-nats-url nats://127.0.0.1:4222 --cluster-name {name} --cluster-node-id n{i} $2"; }
for n in 1 3; do
  db cl${run}s$n
  $B/charla-bench steady --nodes $n --addr 127.0.0.1:1918$((n*3)) --conns 1000 --convs 100 --rate 2000 --duration 20s \
    --engine-cpus 0 --load-cpus 1 --engine-log /tmp/cb/steady-$n.log \
    --out $OUT/steady-${n}node.json --plot $OUT/steady-${n}node.html \
    --engine-cmd "$(tmpl cl${run}s$n '')" > /tmp/cb/steady-$n.txt 2> /tmp/cb/steady-$n.err
  echo "steady $n nodes: exit $?"
done
db cl${run}k
$B/charla-bench node-kill --nodes 3 --addr 127.0.0.1:19191 --kills 10 --conns 120 --convs 12 --rate 300 --duration 2s \
  --engine-cpus 0 --load-cpus 1 --engine-log /tmp/cb/nodekill.log \
  --out $OUT/node-kill.json --plot $OUT/node-kill.html \
  --engine-cmd "$(tmpl cl${run}k '--cluster-lease-ttl 3s --db-max-conns 8')" > /tmp/cb/nodekill.txt 2> /tmp/cb/nodekill.err
echo "node-kill: exit $?"
# node-kill.json was made with --db-max-conns 8 added to its template (a first
# attempt ran PostgreSQL out of connections: max_connections 100, shared).
# A/B of cluster mode on one node (ab-nocluster.json, ab-cluster-1node.json),
# the same steady load (--conns 1000 --convs 100 --rate 2000 --duration 20s
# --engine-cpus 0 --load-cpus 1), one after the other, fresh databases:
#   charla-bench steady --addr 127.0.0.1:19301 ... --engine-cmd "charla serve --addr 127.0.0.1:19301 --auth-mode dev --log-level warn --database-url '…'"
#   charla-bench steady --nodes 1 --addr 127.0.0.1:19311 ... --engine-cmd "charla serve --addr {addr} --auth-mode dev --log-level warn --database-url '…' --cluster-nats-url nats://127.0.0.1:4222 --cluster-name {name} --cluster-node-id n{i}"
