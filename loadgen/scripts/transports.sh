#!/usr/bin/env bash
# TCP and WebSocket side by side: broadcast single, broadcast saturate and rpc, each
# over both transports in every round (interleaved, so the machine's drifts hit both
# alike), each run against a fresh `serve` child; then the medians per scenario,
# codec and transport, and the WebSocket ÷ TCP ratios.
#
#   loadgen/scripts/transports.sh [ROUNDS] [CODECS...]    # default: 3 native
#
# JSON of every run in target/loadgen/transports/; the summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
L=target/release/conduit-loadgen
ROUNDS=${1:-3}
shift || true
CODECS=("${@:-native}")
OUT=target/loadgen/transports
rm -rf "$OUT"
mkdir -p "$OUT"
run() {
  local name=$1 codec=$2 transport=$3 round=$4
  shift 4
  "$L" "$@" --codec "$codec" --transport "$transport" --no-progress \
    --json "$OUT/$name-$codec-$transport-$round.json" >"$OUT/$name-$codec-$transport-$round.txt" 2>&1 ||
    echo "run $name $codec $transport round $round: exit $? (see $OUT/$name-$codec-$transport-$round.txt)" >&2
}
for round in $(seq 1 "$ROUNDS"); do
  for codec in "${CODECS[@]}"; do
    for transport in tcp websocket; do
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
print("scenario codec ws/tcp: ops/s p50 p99 cpu_per_op")
for (name, codec, transport), ws in sorted(rows.items()):
    if transport != "websocket" or (name, codec, "tcp") not in rows:
        continue
    tcp = rows[(name, codec, "tcp")]
    ratio = lambda k: f"{ws[k] / tcp[k]:.2f}" if ws[k] and tcp[k] else "-"
    print(name, codec, ratio("ops"), ratio("p50"), ratio("p99"), ratio("cpu"))
PY
