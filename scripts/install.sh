#!/bin/sh
# Install Petrel: the binary, the setgid petrel-postdrop, the sendmail and
# mailq links, the man pages, the systemd unit, the logrotate snippet, the
# example configuration, the system user `petrel`, and the spool (with its
# maildrop) and log directories.
#
#   scripts/install.sh                        PREFIX=/usr/local (the default)
#   PREFIX=/usr scripts/install.sh            as a distribution package would
#   DESTDIR=/tmp/stage scripts/install.sh     into a staging tree (packaging)
#
# Environment:
#   PREFIX   /usr/local: binary in $PREFIX/sbin, man pages in $PREFIX/share/man
#   DESTDIR  prepended to every path; then no user is created, nothing is
#            chowned, and systemd is not told (a staging tree, not a system)
#   BUILD    the build directory holding the petrel binary (default: build)
#
# petrel-postdrop ($PREFIX/sbin, next to petrel): through it, users other
# than root and petrel submit mail with sendmail (it writes to
# /var/spool/petrel/maildrop/, mode 1730 petrel:petrel; the spool itself is
# 0710 petrel:petrel). Installed mode 2755 group petrel; in a staging tree
# (DESTDIR) mode 0755, and the package sets group petrel and mode 2755. A
# build without it is installed without it, with a note.
#
# Always under /etc (whatever PREFIX is): /etc/petrel/petrel.conf.example
# (and petrel.conf when it does not exist: it is never overwritten),
# /etc/logrotate.d/petrel, and the unit in /etc/systemd/system, or in
# /lib/systemd/system when PREFIX=/usr. The unit's ExecStart names
# $PREFIX/sbin/petrel.
#
# sendmail and mailq: links $PREFIX/sbin/sendmail and $PREFIX/bin/mailq to
# petrel, unless another mail system's sendmail is installed (at that path
# or at /usr/sbin/sendmail): then a note says how to link them by hand.
# With DESTDIR the links are always made.
#
# Idempotent: running it again installs the same files and changes nothing
# else. Exit status 0, or 1 with a message on standard error.
set -eu

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BUILD=${BUILD:-build}
USER_NAME=petrel
SPOOL=/var/spool/petrel
LOGDIR=/var/log/petrel

die() {
	echo "install.sh: $*" >&2
	exit 1
}
note() {
	echo "install.sh: note: $*"
}
say() {
	echo "  $*"
}

case $PREFIX in
/*) ;;
*) die "PREFIX must be an absolute path, got '$PREFIX'" ;;
esac
PREFIX=${PREFIX%/} # "/" becomes "": paths are then /sbin, /bin, ...
DESTDIR=${DESTDIR%/}
case $DESTDIR in
"" | /*) ;;
*) DESTDIR=$(pwd)/$DESTDIR ;; # relative to where we were called from
esac

# Paths in the source tree (and a relative BUILD) are relative to its root.
cd "$(dirname "$0")/.."

BIN=$BUILD/petrel
[ -x "$BIN" ] || die "$BIN not found: build first (make build)"
for f in docs/man/petrel.8 docs/man/petrel.conf.5 dist/petrel.service \
	dist/petrel.logrotate dist/petrel.conf.example; do
	[ -f "$f" ] || die "$f is missing"
done
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
	die "run as root to install into the system (or set DESTDIR)"
fi

SBINDIR=$PREFIX/sbin
BINDIR=$PREFIX/bin
MANDIR=$PREFIX/share/man
if [ "$PREFIX" = /usr ]; then
	UNITDIR=/lib/systemd/system
else
	UNITDIR=/etc/systemd/system
fi

# install -m MODE SRC DST, reporting the destination.
put() {
	install -D -m "$1" "$2" "$DESTDIR$3"
	say "$3"
}

# A file made from a command's output, replaced atomically.
put_from() { # mode dst command...
	mode=$1 dst=$2
	shift 2
	tmp=$DESTDIR$dst.tmp.$$
	mkdir -p "$(dirname "$DESTDIR$dst")"
	if ! "$@" > "$tmp" || ! chmod "$mode" "$tmp" ||
		! mv -f "$tmp" "$DESTDIR$dst"; then
		rm -f "$tmp"
		die "cannot write $DESTDIR$dst"
	fi
	say "$dst"
}

# Is path (on this system) a sendmail other than Petrel (this one or
# another Petrel installation)?
foreign_sendmail() {
	[ -e "$1" ] || [ -L "$1" ] || return 1
	[ "$(basename "$(readlink -f "$1")")" = petrel ] && return 1
	return 0
}

# link NAME TARGET: a symbolic link NAME -> TARGET (relative).
link() {
	if [ -n "$DESTDIR" ]; then
		mkdir -p "$(dirname "$DESTDIR$1")"
		ln -sfn "$2" "$DESTDIR$1"
		say "$1 -> $2"
		return
	fi
	if foreign_sendmail "$1"; then
		note "$1 exists and is not Petrel's: left alone"
		return 1
	fi
	mkdir -p "$(dirname "$1")"
	ln -sfn "$2" "$1"
	say "$1 -> $2"
}

echo "Installing Petrel (PREFIX=$PREFIX${DESTDIR:+, DESTDIR=$DESTDIR})"

# The system user, before anything is chowned to it.
if [ -z "$DESTDIR" ]; then
	if getent passwd "$USER_NAME" > /dev/null; then
		say "user $USER_NAME exists"
	else
		install -d -m 0700 "$SPOOL" # its home: exists before the user
		# Its own group, or the group of that name if one is left over.
		if getent group "$USER_NAME" > /dev/null; then
			grp="--ingroup $USER_NAME"
		else
			grp=--group
		fi
		# shellcheck disable=SC2086 # $grp is two words or one
		adduser --system $grp --home "$SPOOL" --no-create-home \
			--gecos "Petrel mail transfer agent" "$USER_NAME" > /dev/null ||
			die "cannot create the system user $USER_NAME"
		say "user $USER_NAME created"
	fi
fi

put 0755 "$BIN" "$SBINDIR/petrel"

# The setgid helper for submissions by other users (see above).
if [ -x "$BUILD/petrel-postdrop" ]; then
	if [ -n "$DESTDIR" ]; then
		put 0755 "$BUILD/petrel-postdrop" "$SBINDIR/petrel-postdrop"
		note "$SBINDIR/petrel-postdrop: the package must make it group $USER_NAME, mode 2755"
	else
		install -D -m 2755 -o root -g "$USER_NAME" "$BUILD/petrel-postdrop" \
			"$SBINDIR/petrel-postdrop"
		say "$SBINDIR/petrel-postdrop (setgid $USER_NAME)"
	fi
else
	note "$BUILD/petrel-postdrop not built: only root and $USER_NAME can submit mail with sendmail"
fi

# sendmail and mailq.
if [ -n "$DESTDIR" ]; then
	link "$SBINDIR/sendmail" petrel
	link "$BINDIR/mailq" ../sbin/petrel
elif foreign_sendmail /usr/sbin/sendmail && [ "$SBINDIR" != /usr/sbin ]; then
	note "another mail system provides /usr/sbin/sendmail: sendmail and mailq"
	note "are not linked to Petrel. To use Petrel's, remove that mail system"
	note "and run: ln -s petrel $SBINDIR/sendmail; ln -s ../sbin/petrel $BINDIR/mailq"
else
	if link "$SBINDIR/sendmail" petrel; then
		link "$BINDIR/mailq" ../sbin/petrel || true
	else
		note "sendmail and mailq are not linked to Petrel (use: petrel sendmail)"
	fi
fi

put_from 0644 "$MANDIR/man8/petrel.8.gz" gzip -9nc docs/man/petrel.8
put_from 0644 "$MANDIR/man5/petrel.conf.5.gz" gzip -9nc docs/man/petrel.conf.5

put_from 0644 "$UNITDIR/petrel.service" \
	sed "s#/usr/sbin/petrel #$SBINDIR/petrel #" dist/petrel.service
put 0644 dist/petrel.logrotate /etc/logrotate.d/petrel

put 0644 dist/petrel.conf.example /etc/petrel/petrel.conf.example
if [ -e "$DESTDIR/etc/petrel/petrel.conf" ]; then
	say "/etc/petrel/petrel.conf exists: kept"
else
	put 0644 dist/petrel.conf.example /etc/petrel/petrel.conf
fi

# Spool and log directories, owned by the petrel user (only on a system:
# a staging tree gets the modes, its package sets the owner).
# The group may traverse the spool (0710) to reach maildrop/ (1730: it may
# create files there, not list or read them).
if [ -z "$DESTDIR" ]; then
	install -d -m 0710 -o "$USER_NAME" -g "$USER_NAME" "$SPOOL"
	install -d -m 1730 -o "$USER_NAME" -g "$USER_NAME" "$SPOOL/maildrop"
	install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$LOGDIR"
else
	install -d -m 0710 "$DESTDIR$SPOOL"
	install -d -m 1730 "$DESTDIR$SPOOL/maildrop"
	install -d -m 0750 "$DESTDIR$LOGDIR"
fi
say "$SPOOL (0710)"
say "$SPOOL/maildrop (1730)"
say "$LOGDIR (0750)"

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || note "systemctl daemon-reload failed"
fi

if [ -z "$DESTDIR" ]; then
	echo "Done. Edit /etc/petrel/petrel.conf, check it with"
	echo "  $SBINDIR/petrel check-config -c /etc/petrel/petrel.conf"
	echo "then start Petrel with: systemctl enable --now petrel"
fi
