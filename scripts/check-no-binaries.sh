#!/usr/bin/env bash
# Fails if a tracked file is a build output: an ELF executable or object
# (BPF objects generated for bpf2go are allowed: *.o next to *_bpfel.go)
# or any file over 2 MB. Run by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r -d '' f; do
	[ -f "$f" ] || continue
	case "$f" in *_bpfel.o|*_bpfeb.o) continue ;; esac
	if [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; then
		echo "no-binaries: $f is an ELF binary; build outputs must not be committed (add it to .gitignore)"
		bad=1
	elif [ "$(stat -c %s "$f")" -gt 2097152 ]; then
		echo "no-binaries: $f is $(stat -c %s "$f") bytes; large files must not be committed"
		bad=1
	fi
done < <(git ls-files -z)
exit $bad
