#!/bin/bash
# Build every libFuzzer target (clang, ASan+UBSan) and run each for
# FUZZ_TIME seconds (default 60) on a scratch copy of its seed corpus.
#   scripts/fuzz.sh [target...]     e.g. scripts/fuzz.sh smtp_parse
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_TIME=${FUZZ_TIME:-60}
OUT=${FUZZ_OUT:-build-fuzz}
mkdir -p "$OUT"
PURE="src/buf.c src/cidr.c src/config.c src/data_scan.c src/dns_rr.c src/msghdr.c src/smtp_parse.c src/smtp_reply.c src/spool_format.c src/util.c"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for f in tests/fuzz/fuzz_*.c; do t=${f#tests/fuzz/fuzz_}; targets+=("${t%.c}"); done
fi
for t in "${targets[@]}"; do
	echo "== fuzz_$t (${FUZZ_TIME}s)"
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-D_GNU_SOURCE -Isrc $PURE "tests/fuzz/fuzz_$t.c" -linih -o "$OUT/fuzz_$t"
	rm -rf "$OUT/corpus_$t"; mkdir -p "$OUT/corpus_$t"
	if [ -d "tests/fuzz/corpus/$t" ]; then cp -r "tests/fuzz/corpus/$t/." "$OUT/corpus_$t/"; fi
	rc=0
	"$OUT/fuzz_$t" -max_total_time="$FUZZ_TIME" -print_final_stats=1 \
		"$OUT/corpus_$t" > "$OUT/fuzz_$t.log" 2>&1 || rc=$?
	grep -E 'stat::number_of_executed_units|ERROR|SUMMARY' "$OUT/fuzz_$t.log" || true
	if [ "$rc" -ne 0 ]; then tail -40 "$OUT/fuzz_$t.log"; echo "fuzz_$t FAILED"; exit 1; fi
done
