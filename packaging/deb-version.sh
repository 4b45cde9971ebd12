#!/bin/sh
# Prints the package version, from git: the last v<digit> tag as is
# (v1.2.0 -> 1.2.0), commits after it as +git<count>.g<hash> (sorts after
# the tag), and without any tag 0.0~git<count>.g<hash> (sorts before any
# release). Debian versions must start with a digit, which a bare commit
# hash or "dev" need not.
set -eu
if desc=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
	echo "$desc" | sed -e 's/^v//' -e 's/-\([0-9][0-9]*\)-g\([0-9a-f]*\)$/+git\1.g\2/'
elif hash=$(git rev-parse --short HEAD 2>/dev/null); then
	echo "0.0~git$(git rev-list --count HEAD).g$hash"
else
	echo "0.0~dev"
fi
