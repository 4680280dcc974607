#!/bin/bash
# Run every test suite and end with one line "N passed, N failed".
#   unit:        cmocka programs via `meson test`
#   integration: pytest against the real daemon (tests/integration)
#   interop:     the interop matrix with real MTAs (tests/interop), one test per row
# Exit status 0 only when nothing failed and at least one test ran.
set -uo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

passed=0; failed=0

# SANITIZE=1 (make test-asan): sanitizer reports go to files, checked at the end.
if [ "${SANITIZE:-0}" = 1 ]; then
	mkdir -p "$OUT/san"
	export ASAN_OPTIONS="log_path=$OUT/san/asan:detect_leaks=1:abort_on_error=1"
	export UBSAN_OPTIONS="log_path=$OUT/san/ubsan:print_stacktrace=1:halt_on_error=1"
fi

echo "== static checks"
if scripts/check-banned.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

echo "== unit tests (cmocka)"
meson test -C "$BUILD" --suite unit --print-errorlogs > "$OUT/unit.log" 2>&1
cat "$OUT/unit.log" | grep -E '^ *[0-9]+/[0-9]+ ' || true
# cmocka prints one "[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s)," per
# program; meson's testlog holds them all.
log="$BUILD/meson-logs/testlog.txt"
up=$(grep -hoE '^\[  PASSED  \] [0-9]+' "$log" | awk '{s+=$4} END{print s+0}')
uf=$(grep -hoE '^\[  FAILED  \] [0-9]+' "$log" | awk '{s+=$4} END{print s+0}')
# A unit program that crashed or never ran counts as one failure.
crashed=$(grep -cE '^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT|ERROR)' "$OUT/unit.log" || true)
if [ "$uf" -eq 0 ] && [ "$crashed" -gt 0 ]; then uf=$crashed; fi
echo "unit: $up passed, $uf failed"
passed=$((passed + up)); failed=$((failed + uf))

echo "== integration tests (pytest)"
/usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml="$OUT/it.xml" tests/integration
rc=$?
if [ -f "$OUT/it.xml" ]; then
	read -r ip if_ < <(/usr/bin/python3 - "$OUT/it.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else list(r)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f)
PY
)
else
	ip=0; if_=1
fi
if [ "$rc" -ne 0 ] && [ "$if_" -eq 0 ]; then if_=1; fi
echo "integration: $ip passed, $if_ failed"
passed=$((passed + ip)); failed=$((failed + if_))

# Interop matrix (tests/interop/run_interop.py): Petrel against private
# Postfix, Exim, OpenSMTPD, chasquid, aiosmtpd, swaks, smtp-source and
# smtplib instances on loopback; each row counts as one test (PASS or not).
# INTEROP=0 skips it; INTEROP_MESSAGES (default 500) sets the messages per
# row. The table goes to a temporary file (make interop writes docs/interop.md).
if [ "${INTEROP:-1}" = 1 ]; then
	echo "== interop matrix (tests/interop, ${INTEROP_MESSAGES:-500} messages per row)"
	t0=$(date +%s)
	if scripts/interop-deps.sh > "$OUT/interop-deps.log" 2>&1; then
		/usr/bin/python3 tests/interop/run_interop.py --messages "${INTEROP_MESSAGES:-500}" \
			--out "$OUT/interop.md" 2>&1 | tee "$OUT/interop.log"
		rc=${PIPESTATUS[0]}
	else
		cat "$OUT/interop-deps.log"
		echo "interop: scripts/interop-deps.sh failed"
		rc=1
	fi
	# one line per row: "interop: NAME: PASS|FAIL|ERROR sent=..."
	xp=$(grep -cE '^interop: [a-z0-9-]+: PASS ' "$OUT/interop.log" 2>/dev/null || true)
	xf=$(grep -cE '^interop: [a-z0-9-]+: (FAIL|ERROR) ' "$OUT/interop.log" 2>/dev/null || true)
	xp=${xp:-0}; xf=${xf:-0}
	if [ "$rc" -ne 0 ] && [ "$xf" -eq 0 ]; then xf=1; fi
	if [ "$xp" -eq 0 ] && [ "$xf" -eq 0 ]; then xf=1; fi
	[ "$xf" -gt 0 ] && [ -f "$OUT/interop.md" ] && grep -E '^\| .* \| (FAIL|ERROR) \|$' "$OUT/interop.md"
	echo "interop: $xp passed, $xf failed ($(( $(date +%s) - t0 )) s)"
	passed=$((passed + xp)); failed=$((failed + xf))
fi

if [ "${SANITIZE:-0}" = 1 ]; then
	echo "== sanitizer reports"
	if ls "$OUT/san/" 2>/dev/null | grep -q .; then
		cat "$OUT"/san/* | head -80
		echo "sanitizers: FAILED ($(ls "$OUT/san" | wc -l) report files)"
		failed=$((failed + 1))
	else
		echo "sanitizers: no report"
		passed=$((passed + 1))
	fi
fi

[ "${SANITIZE:-0}" = 1 ] && FUZZ_SMOKE=0
echo "== fuzz smoke (libFuzzer, ${FUZZ_SMOKE_TIME:-10}s per target)"
for f in tests/fuzz/fuzz_*.c; do
	[ "${FUZZ_SMOKE:-1}" = 1 ] || break
	t=${f#tests/fuzz/fuzz_}; t=${t%.c}
	if FUZZ_TIME=${FUZZ_SMOKE_TIME:-10} FUZZ_OUT="$OUT/fuzz" scripts/fuzz.sh "$t" > "$OUT/fuzz_$t.log" 2>&1; then
		echo "fuzz_$t: ok ($(grep -ho 'number_of_executed_units: [0-9]*' "$OUT/fuzz_$t.log" | awk '{print $2}') runs)"
		passed=$((passed + 1))
	else
		echo "fuzz_$t: FAILED"; tail -30 "$OUT/fuzz_$t.log"
		failed=$((failed + 1))
	fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
