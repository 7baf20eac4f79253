#!/usr/bin/env bash
# TCP, WebSocket and TLS side by side: broadcast single, broadcast saturate and rpc,
# each over every transport in every round (interleaved, so the machine's drifts hit
# them alike), each run against a fresh `serve` child; then the medians per scenario,
# codec and transport, and each transport's ratios to TCP.
#
#   loadgen/scripts/transports.sh [ROUNDS] [CODECS...]    # default: 3 native
#   TRANSPORTS="tcp tls" loadgen/scripts/transports.sh    # default: tcp websocket
#
# TLS runs use a self-signed certificate (ECDSA P-256, for 127.0.0.1) made here by
# `openssl req`; the server presents it, the clients trust it.
# JSON of every run in target/loadgen/transports/; the summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
L=target/release/conduit-loadgen
ROUNDS=${1:-3}
shift || true
CODECS=("${@:-native}")
read -r -a TRANSPORTS <<<"${TRANSPORTS:-tcp websocket}"
OUT=target/loadgen/transports
rm -rf "$OUT"
mkdir -p "$OUT"
for transport in "${TRANSPORTS[@]}"; do
  if [ "$transport" = tls ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
      -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      -addext "basicConstraints=critical,CA:FALSE" \
      -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null
  fi
done
run() {
  local name=$1 codec=$2 transport=$3 round=$4
  shift 4
  local tls=()
  if [ "$transport" = tls ]; then
    tls=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")
  fi
  "$L" "$@" --codec "$codec" --transport "$transport" "${tls[@]}" --no-progress \
    --json "$OUT/$name-$codec-$transport-$round.json" >"$OUT/$name-$codec-$transport-$round.txt" 2>&1 ||
    echo "run $name $codec $transport round $round: exit $? (see $OUT/$name-$codec-$transport-$round.txt)" >&2
}
for round in $(seq 1 "$ROUNDS"); do
  for codec in "${CODECS[@]}"; do
    for transport in "${TRANSPORTS[@]}"; do
      run broadcast-single "$codec" "$transport" "$round" \
        broadcast --mode single --messages 200 --duration-s 8 --drain-s 5
      run broadcast-saturate "$codec" "$transport" "$round" \
        broadcast --mode saturate --window 128 --burst 64 --messages 20000 --duration-s 3 --drain-s 5
      run rpc "$codec" "$transport" "$round" rpc --depth 1 --duration-s 3
    done
  done
done
python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name, codec, transport, _ = os.path.basename(path)[:-5].rsplit("-", 3)
    r = json.load(open(path))
    runs.setdefault((name, codec, transport), []).append(r)
def med(rs, f):
    v = [f(r) for r in rs]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
def lat(key, q):
    return lambda r: (r.get(key) or {}).get(q)
print("scenario codec transport runs ops/s p50_us p99_us fanout_p99_us cpu_us_per_op core_pct errors incomplete")
rows = {}
for (name, codec, transport), rs in sorted(runs.items()):
    row = dict(
        ops=med(rs, lambda r: r["ops_per_s"]),
        p50=med(rs, lat("latency", "p50_us")),
        p99=med(rs, lat("latency", "p99_us")),
        fan=med(rs, lat("fanout", "p99_us")),
        cpu=med(rs, lambda r: r.get("server_cpu_us_per_op")),
        core=med(rs, lambda r: r.get("server_core_pct")),
    )
    rows[(name, codec, transport)] = row
    errors = sum(r["errors"] for r in rs)
    incomplete = sum(not r["complete"] for r in rs)
    print(name, codec, transport, len(rs), *(f"{row[k]:.4g}" if row[k] is not None else "-" for k in ("ops", "p50", "p99", "fan", "cpu", "core")), errors, incomplete)
print()
print("scenario codec transport/tcp: ops/s p50 p99 cpu_per_op")
for (name, codec, transport), other in sorted(rows.items()):
    if transport == "tcp" or (name, codec, "tcp") not in rows:
        continue
    tcp = rows[(name, codec, "tcp")]
    ratio = lambda k: f"{other[k] / tcp[k]:.2f}" if other[k] and tcp[k] else "-"
    print(name, codec, f"{transport}/tcp", ratio("ops"), ratio("p50"), ratio("p99"), ratio("cpu"))
PY
