#!/bin/sh
# run.sh runs weft's comparison benchmarks (what `make bench` calls) and
# prints medians with ratios to baselines measured in the same run.
#
# Every round runs every benchmark once (-count=1), and the rounds are
# repeated COUNT times, so the rows interleave (A B C C B A A B C ...:
# every other round runs the paths in reverse) and a slow minute on a
# shared machine hits all rows alike.
#
# Environment:
#   COUNT            rounds (default 5; at least 5 for the published figures)
#   BENCH            -bench regexp of the call benchmarks (default: the
#                    paths and the tail, which run to another process or
#                    through real servers)
#   BENCHTIME        their -benchtime per row and round (default 1s: the
#                    proxies' CPU is read in 10 ms ticks)
#   MICRO            -bench regexp of the microbenchmarks (default: the
#                    decision, authorization and rebuild benchmarks; empty
#                    to skip them). BenchmarkPick (pick_test.go) is left
#                    out by default: building grpc-go's pickers over 10 000
#                    endpoints takes ~90 s per round; add it with
#                    MICRO='^Benchmark(Decision|Authorize|Rebuild|Pick)$'.
#   MICRO_BENCHTIME  their -benchtime (default 200ms)
#   OUT              file for the raw results (default results/<UTC date>.txt)
#   GO               go command (default go)
set -eu
cd "$(dirname "$0")"
COUNT=${COUNT:-5}
BENCH=${BENCH:-^Benchmark(HTTP|GRPC|Tail)\$}
BENCHTIME=${BENCHTIME:-1s}
MICRO=${MICRO-^Benchmark(Decision|Authorize|Rebuild)\$}
MICRO_BENCHTIME=${MICRO_BENCHTIME:-200ms}
GO=${GO:-go}
mkdir -p results
OUT=${OUT:-results/$(date -u +%Y-%m-%dT%H%MZ).txt}

# The sidecar rows need HAProxy from the distribution's packages.
if ! command -v haproxy >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "run.sh: installing haproxy (apt-get)" >&2
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; } >&2 || true
	fi
	if ! command -v haproxy >/dev/null 2>&1; then
		echo "run.sh: haproxy is not installed and cannot be installed here (needs root and apt-get):" >&2
		echo "run.sh: the sidecar rows (path=haproxy-1hop, path=haproxy-2hop) are SKIPPED" >&2
	fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
$GO test -c -o "$work/bench.test" .
$GO build -o "$work/benchserver" ./cmd/benchserver
export WEFT_BENCHSERVER="$work/benchserver"

{
	echo "# weft benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc 2>/dev/null || echo '?') CPUs, $($GO version)"
	command -v haproxy >/dev/null 2>&1 && echo "# $(haproxy -v | head -1)"
	echo "# COUNT=$COUNT BENCH=$BENCH BENCHTIME=$BENCHTIME MICRO=$MICRO MICRO_BENCHTIME=$MICRO_BENCHTIME"
} >"$OUT"
i=1
while [ "$i" -le "$COUNT" ]; do
	echo "run.sh: round $i of $COUNT" >&2
	# Every other round runs the paths in reverse order.
	WEFT_BENCH_REVERSE=$((1 - i % 2)) "$work/bench.test" -test.run '^$' -test.bench "$BENCH" -test.count 1 \
		-test.benchtime "$BENCHTIME" -test.benchmem >>"$OUT"
	if [ -n "$MICRO" ]; then
		"$work/bench.test" -test.run '^$' -test.bench "$MICRO" -test.count 1 \
			-test.benchtime "$MICRO_BENCHTIME" -test.benchmem >>"$OUT"
	fi
	i=$((i + 1))
done

echo
echo "== benchstat (median and 95% confidence interval of each row) =="
$GO tool benchstat "$OUT"
echo
echo "== ratios to the baselines of the same run (medians) =="
$GO run ./cmd/benchtable "$OUT"
echo
echo "raw results: benchmarks/$OUT"
