#!/bin/sh
# keepalived track_script: exit 0 when the daemon at control socket $1 is
# healthy (`xdpcluster ctl health`: dataplane attached and healthy) and has
# run for 4 s at least. The grace makes any restart of the daemon, however
# fast, fail `fall` (2) consecutive checks, so its node's instances go
# FAULT and come back: a restarted daemon serves its configured share only,
# and the share of another node it had taken over must be taken again.
set -eu
sock=${1:-/run/xdpcluster/control.sock}
xdpcluster ctl --socket "$sock" health >/dev/null
up=$(xdpcluster ctl --socket "$sock" status | sed -n 's/^uptime: *//p')
if [ -z "$up" ]; then
  echo "no uptime in xdpcluster ctl status" >&2
  exit 1
fi
case "$up" in
  [0-3]s) echo "xdpcluster started ${up} ago" >&2; exit 1 ;;
esac
