# shellcheck shell=bash
# Helpers of the Vagrant provisioning scripts beside this file (sourced, not run).

# shellcheck disable=SC2034 # used by the scripts that source this file
LAB=/opt/overlay-vagrant              # where the Vagrantfile puts these scripts and the uploads

say() { printf 'overlay-vagrant: %s\n' "$*"; }
fail() {
    say "FAILED: $*" >&2
    exit 1
}

# Debian and Ubuntu boxes install with apt, EL boxes with dnf.
pkg_family() {
    if command -v apt-get >/dev/null; then
        echo deb
    elif command -v dnf >/dev/null; then
        echo rpm
    else
        fail "this box has neither apt-get nor dnf"
    fi
}

APT_UPDATED=no
pkg_install() { # PACKAGE... (a path to a .deb/.rpm works too)
    if [ "$(pkg_family)" = deb ]; then
        if [ "$APT_UPDATED" = no ]; then
            apt-get update -q >/dev/null || fail "apt-get update failed"
            APT_UPDATED=yes
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
            fail "apt-get install $* failed"
    else
        dnf install -y -q "$@" >/dev/null || fail "dnf install $* failed"
    fi
}

# os_id: ID of /etc/os-release (debian, ubuntu, rocky, almalinux, ...).
os_id() { (. /etc/os-release && echo "${ID:-unknown}"); }

# iface_with IP: the interface that holds IP (the box names its NICs as it likes).
iface_with() {
    ip -4 -o addr show | awk -v ip="$1" '{ split($4, a, "/"); if (a[1] == ip) { print $2; exit } }'
}

# wait_tcp HOST PORT SECONDS WHAT: until something accepts connections there.
wait_tcp() {
    local host=$1 port=$2 limit=$3 what=$4 waited=0
    until timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; do
        [ "$waited" -lt "$limit" ] || fail "$what ($host:$port) not reachable after ${limit} s"
        [ $((waited % 60)) -eq 0 ] && say "waiting for $what ($host:$port) ..."
        sleep 5
        waited=$((waited + 5))
    done
}

# secret_file PATH CONTENT: a root-only file holding one line.
secret_file() {
    (umask 077 && printf '%s\n' "$2" >"$1")
}

# random_password: 24 letters and digits (what cloudstack-setup-databases' user:pw@host carries).
random_password() {
    local pw
    pw=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24) || true
    [ ${#pw} -eq 24 ] || fail "could not make a password from /dev/urandom"
    printf '%s' "$pw"
}
