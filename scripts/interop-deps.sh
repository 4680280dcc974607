#!/bin/bash
# Dependencies of the interop matrix (tests/interop/run_interop.py: `make
# interop`, and the interop stage of `make test`) and of `make bench`.
# - scripts/deps.sh first: build and test packages, among them postfix
#   (installed unconfigured, no service started; smtp-source comes with it,
#   the Postfix rows run private instances, never /etc/postfix), swaks,
#   openssl and python3-aiosmtpd
# - fetches the MTAs that conflict with Postfix as installed packages
#   (exim4-daemon-light, opensmtpd) and chasquid with `apt-get download` and
#   unpacks them with `dpkg -x` into build-interop/peers/<name>/ (never run
#   their maintainer scripts, never touch /etc)
# - installs the libraries those packages depend on (read from the .debs'
#   Depends; none of them conflicts with anything), then checks with ldd
#   that every unpacked daemon finds all its libraries
# - creates the system users the daemons look up before reading any
#   configuration
# As root it installs what is missing (apt-get update first when something
# is); as another user it prints the apt-get line and fails, like deps.sh.
# Idempotent: a peer already unpacked is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=build-interop/peers
mkdir -p "$PEERS/debs"

scripts/deps.sh

export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {   # once per run, and only when something must be fetched
    [ "$updated" = 1 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "interop-deps: packages must be fetched or installed; run as root:" >&2
        echo "  scripts/interop-deps.sh" >&2
        exit 1
    fi
    apt-get update -qq
    updated=1
}
installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
install_missing() {   # install_missing WHAT PKG...
    what=$1; shift
    need=""
    for p in "$@"; do installed "$p" || need="$need $p"; done
    [ -z "$need" ] && return 0
    apt_update
    echo "interop-deps: installing $what:$need"
    apt-get install -y -qq --no-install-recommends $need >/dev/null
}

# deps.sh installs it too (make test runs the matrix); kept here so that
# this script alone is enough for `make interop` and `make bench`
install_missing packages python3-aiosmtpd
# make bench: strace (its fsync-before-250 check of each MTA), gnuplot (plots)
install_missing "bench tools" strace gnuplot-nox

unpack() {   # unpack NAME PKG...
    name=$1; shift
    [ -e "$PEERS/$name/.done" ] && return 0
    rm -rf "$PEERS/$name"; mkdir -p "$PEERS/$name"
    for pkg in "$@"; do
        if ! ls "$PEERS"/debs/${pkg}_*.deb >/dev/null 2>&1; then
            apt_update
            ( cd "$PEERS/debs" && apt-get download "$pkg" >/dev/null )
        fi
        dpkg -x "$(ls "$PEERS"/debs/${pkg}_*.deb | head -1)" "$PEERS/$name"
    done
    touch "$PEERS/$name/.done"
    echo "interop-deps: $name unpacked in $PEERS/$name"
}
unpack exim exim4-daemon-light exim4-base
unpack opensmtpd opensmtpd
unpack chasquid chasquid

# the libraries the unpacked packages depend on (lib*, zlib*: the rest of
# their Depends, such as adduser, cron or exim4-config, is for maintainer
# scripts that never run here)
libs=$(for d in "$PEERS"/debs/*.deb; do dpkg-deb -f "$d" Depends; done |
    tr ',|' '\n\n' | sed -e 's/([^)]*)//g' -e 's/:any//' -e 's/^ *//' -e 's/ *$//' |
    grep -E '^(lib|zlib)' | sort -u)
install_missing libraries $libs

# every unpacked daemon must find all its shared libraries
for bin in "$PEERS"/exim/usr/sbin/exim4 "$PEERS"/opensmtpd/usr/sbin/smtpd \
           "$PEERS"/chasquid/usr/bin/chasquid; do
    if ldd "$bin" 2>&1 | grep -q "not found"; then
        echo "interop-deps: $bin: libraries not found:" >&2
        ldd "$bin" | grep "not found" >&2
        exit 1
    fi
done

# the unpacked daemons look up their compiled-in users before reading any
# configuration: create them (system users, no home, no login) as the
# packages' maintainer scripts would; nothing else of the packages is set up
adduser_sys() {   # adduser_sys NAME [HOME]
    id "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "interop-deps: system user $1 missing; run as root: scripts/interop-deps.sh" >&2
        exit 1
    fi
    useradd --system --no-create-home --home-dir "${2:-/nonexistent}" --shell /usr/sbin/nologin --user-group "$1"
    echo "interop-deps: system user $1 created"
}
adduser_sys Debian-exim
# OpenSMTPD's paths are compiled in (/var/spool/smtpd, chroot
# /var/lib/opensmtpd/empty, /var/run/smtpd.sock): tests/interop/peers.py runs
# it in a private mount namespace where private directories are bind-mounted
# on /var/spool, /var/lib and /run, so none of these exists on the host
adduser_sys opensmtpd /var/lib/opensmtpd/empty
adduser_sys opensmtpq /var/lib/opensmtpd/empty
# chasquid runs as root from its private -config_dir, in a private mount
# namespace (its own /etc/resolv.conf, tests/interop/peers.py); the user is
# created as its package would, but is not needed by the matrix
adduser_sys chasquid
