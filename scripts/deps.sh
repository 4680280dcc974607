#!/bin/bash
# Install the Debian packages Petrel needs to build and test, when missing.
# As root: apt-get install them. Otherwise: print the exact command and fail.
set -euo pipefail

PKGS="gcc make meson ninja-build pkg-config libssl-dev libevent-dev
libunbound-dev libinih-dev libcmocka-dev openssl python3 python3-pytest
swaks postfix nsd clang logrotate python3-aiosmtpd"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
	echo "petrel: missing build dependencies; run as root:" >&2
	echo "  apt-get update && $cmd" >&2
	exit 1
fi
echo "petrel: installing:$missing"
# Postfix is only wanted for its smtp-source/smtp-sink test tools: install it
# unconfigured so that no system mail service starts. nsd is the tests' DNS
# server (a private instance per test); a policy-rc.d keeps package scripts
# from starting system services while we install.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
rc_created=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	rc_created=1
fi
st=0
apt-get update -qq || st=$?
[ "$st" = 0 ] && { $cmd -qq || st=$?; }
[ "$rc_created" = 1 ] && rm -f /usr/sbin/policy-rc.d
exit $st
