#!/bin/bash
# Fail if a banned C function is called in src/ or tests/ (see STYLE.md).
set -uo pipefail
cd "$(dirname "$0")/.."
pat='\b(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|gets|strncpy|stpcpy)[[:space:]]*\('
hits=$(grep -nE "$pat" src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c 2>/dev/null || true)
if [ -n "$hits" ]; then
	echo "banned functions used:" >&2
	echo "$hits" >&2
	exit 1
fi
echo "check-banned: ok"
