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
#   COUNT      rounds (default 5; at least 5 for the published figures)
#   BENCHTIME  -benchtime per row and round (default 1s)
#   BENCH      -bench regexp (default: every benchmark)
#   OUT        file for the raw results (default results/<UTC date>.txt)
#   GO         go command (default go)
set -eu
cd "$(dirname "$0")"
COUNT=${COUNT:-5}
BENCHTIME=${BENCHTIME:-1s}
BENCH=${BENCH:-.}
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
	echo "# COUNT=$COUNT BENCHTIME=$BENCHTIME BENCH=$BENCH"
} >"$OUT"
i=1
while [ "$i" -le "$COUNT" ]; do
	echo "run.sh: round $i of $COUNT" >&2
	# Every other round runs the paths in reverse order.
	WEFT_BENCH_REVERSE=$((1 - i % 2)) "$work/bench.test" -test.run '^$' -test.bench "$BENCH" -test.count 1 \
		-test.benchtime "$BENCHTIME" -test.benchmem >>"$OUT"
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
