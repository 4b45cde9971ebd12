#!/usr/bin/env bash
# Installs the Debian packages the tests need, when a tool is missing.
# Run as root (CI is root). Without root it only reports what is missing;
# the tests that need those tools then skip or fail with the remedy.
set -euo pipefail

declare -A pkg_of=(
  [ip]=iproute2
  [iptables]=iptables
  [ip6tables]=iptables
  [iptables-restore]=iptables
  [conntrack]=conntrack
  [tcpdump]=tcpdump
  [ping]=iputils-ping
  [ethtool]=ethtool
  [prometheus]=prometheus
  [promtool]=prometheus  # promtool test rules (deploy/prometheus)
  [iperf3]=iperf3        # make bench-tcp(-smoke)
  [keepalived]=keepalived # cmd/xdpcluster/keepalived_test.go: the shipped keepalived files, run for real
  [clang]=clang          # make generate: bpf2go compiles bpf/*.c
  [llvm-strip]=llvm      # ... and strips the objects' DWARF
  [dpkg-deb]=dpkg        # packaging/package_test.go: make package, installed with dpkg --root
)

missing=()
for tool in "${!pkg_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg_of[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${pkgs[*]}; not root, so not installing (root-only tests will skip)" >&2
  exit 0
fi
echo "install-test-deps: installing ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
