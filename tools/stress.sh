#!/usr/bin/env bash
# stress.sh [N]: runs `make examples unit` N times (default 5) while two
# busy loops keep the CPU loaded, then prints each test or example that
# failed and in how many runs. Exits 1 if anything failed. The busy loops
# end with the script, however it ends.
set -uo pipefail
n=${1:-5}
cd "$(dirname "$0")/.."

out=$(mktemp -d)
busy=()
cleanup() {
	for p in "${busy[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in 1 2; do
	(while :; do :; done) &
	busy+=("$!")
done

for i in $(seq 1 "$n"); do
	start=$(date +%s)
	make -k --no-print-directory examples >"$out/examples.$i" 2>&1
	make -k --no-print-directory unit TESTFLAGS=-json >"$out/unit.$i" 2>&1
	# A failed test or package from `go test -json`; a failed example
	# from make's report of its target.
	{
		sed -n -E 's/^\{.*"Action":"fail","Package":"([^"]*)"(,"Test":"([^"]*)")?.*/\1 \3/p' "$out/unit.$i"
		sed -n -E 's/.*\*\*\* \[[^]]*: (example-[a-z]+)\] .*/\1/p' "$out/examples.$i"
	} | sort -u >"$out/failed.$i"
	took=$(($(date +%s) - start))
	if [ -s "$out/failed.$i" ]; then
		echo "run $i/$n: FAIL in ${took}s ($(wc -l <"$out/failed.$i") failed), load $(cut -d' ' -f1-3 /proc/loadavg)"
	else
		echo "run $i/$n: ok in ${took}s, load $(cut -d' ' -f1-3 /proc/loadavg)"
	fi
done

cat "$out"/failed.* | sort | uniq -c | sort -rn >"$out/summary"
if [ -s "$out/summary" ]; then
	echo "failed (runs out of $n, test):"
	cat "$out/summary"
	exit 1
fi
echo "no failure in $n runs"
