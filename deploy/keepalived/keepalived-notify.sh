#!/bin/sh
# keepalived notify script: $1 = GROUP|INSTANCE, $2 = name, $3 = state.
# The instance name share_of_nodeN says whose share it is.
set -eu
node=${2##*_of_node}
case "$3" in
  MASTER) exec xdpcluster ctl takeover "$node" ;;
  BACKUP|FAULT|STOP) exec xdpcluster ctl release "$node" ;;
esac
