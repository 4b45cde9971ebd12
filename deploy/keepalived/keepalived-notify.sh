#!/bin/sh
# keepalived notify script: [--socket PATH] [--self nodeN] then
# keepalived's arguments, $1 = GROUP|INSTANCE, $2 = name (share_of_nodeN),
# $3 = state. --socket is the daemon's control.socket (default: ctl's),
# --self this node's keepalived config id. For another node's share: MASTER takes it over, any other
# state releases it. For the node's own share (N = --self): nothing, ever;
# the daemon serves it from its configuration (local_node).
set -eu
sock=
self=
while :; do
  case "${1:-}" in
    --socket) sock=--socket=$2; shift 2 ;;
    --self) self=${2#node}; shift 2 ;;
    *) break ;;
  esac
done
node=${2##*_of_node}
if [ "$node" = "$self" ]; then
  exit 0
fi
case "$3" in
  MASTER) exec xdpcluster ctl ${sock:+"$sock"} takeover "$node" ;;
  BACKUP|FAULT|STOP|DELETED) exec xdpcluster ctl ${sock:+"$sock"} release "$node" ;;
esac
