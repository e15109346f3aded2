#!/usr/bin/env bash
# Builds keepalived 2.4.3 from its source into a private prefix, for the
# failover benchmarks only (never CI, never installed system-wide): the
# benchmark runs it when -keepalived.source names the binary (or
# KEEPALIVED_SOURCE_BIN is set), with vrrp_down_timer_adverts 1.
#
#   bench/keepalived-source.sh [PREFIX]      (root: installs missing build deps)
#
# PREFIX defaults to /opt/muros-bench/keepalived-2.4.3; the binary ends up in
# PREFIX/sbin/keepalived and the script prints its path last.
#
# The source is tag v2.4.3 (commit 53701f5648fb457fce5c3417fd309f286fbd1335)
# of acassen/keepalived, taken from KEEPALIVED_GIT (a clone or bare git
# directory holding the tag), else cloned from KEEPALIVED_URL (default the
# project's GitHub repository). The commit is checked either way: a tag that
# moved is refused.
set -euo pipefail

version=2.4.3
commit=53701f5648fb457fce5c3417fd309f286fbd1335
prefix=${1:-/opt/muros-bench/keepalived-$version}
url=${KEEPALIVED_URL:-https://github.com/acassen/keepalived.git}

# Debian build dependencies; configure --disable-snmp --disable-dbus needs no
# more than these (libnl for netlink, nftnl/mnl for the nftables VIP rules).
deps=(gcc make autoconf automake pkg-config libssl-dev libnl-3-dev libnl-genl-3-dev libnl-route-3-dev libnftnl-dev libmnl-dev)
missing=()
for d in "${deps[@]}"; do
	dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'install ok installed' || missing+=("$d")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "keepalived-source: missing build dependencies (run as root to install): ${missing[*]}" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "${KEEPALIVED_GIT:-}" ]; then
	git_dir=$KEEPALIVED_GIT
	[ -d "$git_dir/.git" ] && git_dir=$git_dir/.git
else
	git clone -q --bare --filter=blob:none "$url" "$work/keepalived.git"
	git_dir=$work/keepalived.git
fi
got=$(git --git-dir="$git_dir" rev-parse "v$version^{commit}")
if [ "$got" != "$commit" ]; then
	echo "keepalived-source: v$version is $got in $git_dir, want $commit" >&2
	exit 1
fi
mkdir "$work/src"
git --git-dir="$git_dir" archive "$commit" | tar -x -C "$work/src"

cd "$work/src"
autoreconf -i >/dev/null 2>&1 || ./build_setup
./configure -q --prefix="$prefix" --disable-snmp --disable-dbus --enable-bfd >"$work/configure.log" 2>&1 ||
	{ tail -30 "$work/configure.log" >&2; exit 1; }
make -s -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; exit 1; }
make -s install >/dev/null
"$prefix/sbin/keepalived" --version 2>&1 | head -1 >&2
echo "$prefix/sbin/keepalived"
