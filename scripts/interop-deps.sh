#!/bin/sh
# Dependencies of `make interop` (tests/interop/run_interop.py).
# - installs system-wide only what does not conflict with anything:
#   python3-aiosmtpd, swaks, postfix (already there; smtp-source comes with it;
#   the Postfix → Petrel row runs a private instance, never /etc/postfix)
# - fetches the MTAs that conflict with Postfix as installed packages
#   (exim4-daemon-light, opensmtpd) and chasquid with `apt-get download` and
#   unpacks them with `dpkg -x` into build-interop/peers/<name>/ (never run
#   their maintainer scripts, never touch /etc).
# Idempotent: a peer already unpacked is left alone.
set -eu
cd "$(dirname "$0")/.."
PEERS=build-interop/peers
mkdir -p "$PEERS/debs"

need=""
for p in python3-aiosmtpd swaks postfix openssl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
    echo "interop-deps: installing$need"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need >/dev/null
fi

# libraries the unpacked daemons need at run time; none of them conflicts
libs=""
for p in libasr0 libtls26 libevent-2.1-7 libgnutls30 libpcre2-8-0 libdb5.3 libidn12; do
    if apt-cache show "$p" >/dev/null 2>&1; then
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || libs="$libs $p"
    fi
done
if [ -n "$libs" ]; then
    echo "interop-deps: installing libraries$libs"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $libs >/dev/null
fi

unpack() {   # unpack NAME PKG...
    name=$1; shift
    [ -e "$PEERS/$name/.done" ] && return 0
    rm -rf "$PEERS/$name"; mkdir -p "$PEERS/$name"
    for pkg in "$@"; do
        ( cd "$PEERS/debs" && ls ${pkg}_*.deb >/dev/null 2>&1 || apt-get download "$pkg" >/dev/null )
        dpkg -x "$(ls "$PEERS"/debs/${pkg}_*.deb | head -1)" "$PEERS/$name"
    done
    touch "$PEERS/$name/.done"
    echo "interop-deps: $name unpacked in $PEERS/$name"
}
unpack exim exim4-daemon-light exim4-base
unpack opensmtpd opensmtpd
unpack chasquid chasquid

# the unpacked daemons look up their compiled-in users before reading any
# configuration: create them (system users, no home, no login) as the
# packages' maintainer scripts would; nothing else of the packages is set up
adduser_sys() {   # adduser_sys NAME [HOME]
    id "$1" >/dev/null 2>&1 && return 0
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
# chasquid runs as root from its private -config_dir (tests/interop/peers.py);
# the user is created as its package would, but is not needed by the matrix
adduser_sys chasquid
