#!/usr/bin/env bash
# Prepares a Debian or Ubuntu machine to be a resalloc machine. Run as root, on the machine.
# Idempotent: running it again changes nothing that is already right.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: setup.sh [--no-firewall] LOGIN PUBKEY
       setup.sh --help

Prepares this machine (Debian or Ubuntu, as root) so that a resalloc master can
lease Docker containers on it over SSH:
  - installs Docker from the distribution (docker.io) when no docker is present;
  - creates the login user LOGIN when missing, unlocked for key-only SSH login;
  - puts LOGIN in the docker group;
  - adds the master's public key (PUBKEY: a path, or - for stdin) to
    ~LOGIN/.ssh/authorized_keys, once;
  - makes sure the Docker engine listens on no TCP port (the master needs none);
  - installs resalloc-firewall (/usr/local/sbin) and a systemd unit that applies it at
    boot and whenever Docker starts: no lease reaches this machine's own addresses
    (its sshd, anything listening on it) or link-local addresses (169.254.0.0/16, a
    cloud's metadata service); leases of different owners are on different bridges,
    which Docker keeps apart. The master refuses a machine without these rules
    (and marks one that loses them unhealthy). --no-firewall leaves them out, for a
    master run with --tenant-networks off.

Nothing else is installed for resalloc cp, resalloc forward or ending a dropped
session's processes: the master copies its own static busybox (about 2 MB) to the
machine's engine as the image resalloc/relay:<hash> (docker import) the first
time it needs it, and runs it beside a lease's container, in its namespaces.
resalloc cp stages a copy into a lease in ${TMPDIR:-/var/tmp} of LOGIN first:
keep room there for the largest copy.

Example, on the new machine:
  sudo ./setup.sh resalloc resalloc.pem.pub
then, on the master:
  resalloc machine create m1 resalloc 203.0.113.7
USAGE
}

die() { echo "setup.sh: $*" >&2; exit 1; }

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
firewall=yes
if [ "${1:-}" = --no-firewall ]; then firewall=no; shift; fi
[ $# -eq 2 ] || { usage >&2; exit 2; }
login=$1 pubkey_source=$2

[ "$(id -u)" -eq 0 ] || die "run me as root (sudo $0 $*)"
[[ "$login" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "'$login' is not a valid login name (lowercase letters, digits, - and _)"

if [ "$pubkey_source" = - ]; then
    pubkey=$(cat)
else
    [ -r "$pubkey_source" ] || die "cannot read the public key file '$pubkey_source'"
    pubkey=$(cat "$pubkey_source")
fi
pubkey=$(printf '%s\n' "$pubkey" | sed -n '1p')
case "$pubkey" in
    ssh-ed25519\ *|ecdsa-sha2-nistp256\ *|ecdsa-sha2-nistp384\ *|ecdsa-sha2-nistp521\ *) ;;
    ssh-rsa\ *) die "an RSA key cannot be used: libssh2 1.10 signs RSA with SHA-1, which OpenSSH 8.8+ refuses; use the Ed25519 or ECDSA key that 'make keys' makes" ;;
    *) die "the public key does not look like an OpenSSH public key (ssh-ed25519 … or ecdsa-sha2-… …)" ;;
esac

# 1. Docker from the distribution.
if ! command -v docker >/dev/null 2>&1; then
    echo "installing docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
getent group docker >/dev/null || groupadd --system docker

# 2. The login user, unlocked for key login (useradd leaves it locked and sshd refuses it).
if ! id "$login" >/dev/null 2>&1; then
    echo "creating user $login"
    useradd --create-home --shell /bin/sh "$login"
fi
# A new account's password field is "!" (locked), and sshd without PAM refuses a locked account
# even with a good key; "*" means no password and not locked. A locked real password ("!$hash")
# is the operator's choice: say so, change nothing.
case "$(getent shadow "$login" | cut -d: -f2)" in
    '' | '!' | '!!' | '!*') usermod -p '*' "$login" ;;
    '!'*) echo "setup.sh: warning: $login's password is locked; an sshd without PAM refuses it even with the key" >&2 ;;
esac
id -nG "$login" | tr ' ' '\n' | grep -qx docker || usermod -aG docker "$login"

# 3. The master's public key, once.
home=$(getent passwd "$login" | cut -d: -f6)
install -d -m 0700 -o "$login" -g "$(id -gn "$login")" "$home/.ssh"
keys="$home/.ssh/authorized_keys"
touch "$keys"
if ! grep -qxF "$pubkey" "$keys"; then
    printf '%s\n' "$pubkey" >>"$keys"
    echo "authorized the key for $login"
fi
chown "$login:$(id -gn "$login")" "$keys"
chmod 0600 "$keys"

# 4. Docker on no TCP port: the seed opened 5555 to the world; the master only needs SSH.
if [ -f /etc/default/docker ] && grep -Eq '^[[:space:]]*DOCKER_OPTS=.*tcp://' /etc/default/docker; then
    sed -i -E 's/^([[:space:]]*DOCKER_OPTS=.*tcp:\/\/.*)$/# disabled by resalloc setup.sh: \1/' /etc/default/docker
    echo "removed a TCP listener from /etc/default/docker"
    command -v systemctl >/dev/null && systemctl restart docker 2>/dev/null || true
fi
if [ -f /etc/docker/daemon.json ] && grep -q 'tcp://' /etc/docker/daemon.json; then
    die "/etc/docker/daemon.json makes Docker listen on TCP; remove the tcp:// entry from \"hosts\" and restart docker"
fi
if command -v ss >/dev/null 2>&1 && ss -ltnpH 2>/dev/null | grep -q '"dockerd"'; then
    die "dockerd listens on a TCP port (see 'ss -ltnp'); remove its -H tcp://… option and restart docker"
fi
# 5. The firewall between leases and the machine, kept across reboots and Docker restarts.
if [ "$firewall" = yes ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    install -m 0755 "$here/resalloc-firewall" /usr/local/sbin/resalloc-firewall
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        cat >/etc/systemd/system/resalloc-firewall.service <<'UNIT'
[Unit]
Description=resalloc: keep leases away from this machine and from link-local addresses
After=docker.service
PartOf=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/resalloc-firewall apply
ExecStop=/usr/local/sbin/resalloc-firewall remove

[Install]
WantedBy=multi-user.target docker.service
UNIT
        systemctl daemon-reload
        systemctl enable --now resalloc-firewall.service >/dev/null 2>&1 || die "the firewall unit failed: systemctl status resalloc-firewall"
        systemctl restart resalloc-firewall.service
    else
        /usr/local/sbin/resalloc-firewall apply
        echo "setup.sh: warning: no systemd here: the firewall is applied now but not after a reboot; run /usr/local/sbin/resalloc-firewall apply at boot, after Docker" >&2
    fi
    echo "firewall in place (resalloc-firewall check)"
fi
echo "machine ready: login $login, docker $(docker --version 2>/dev/null | cut -d' ' -f3 | tr -d ,)"
