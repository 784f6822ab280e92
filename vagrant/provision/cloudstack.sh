#!/usr/bin/env bash
# Vagrant provisioning, management server and KVM hosts: CloudStack, from the scripts the overlayd
# package ships in /usr/share/overlayd/cloudstack/, started the user-data's way — the inputs as
# KEY=VALUE lines in /etc/overlayd/cloudstack.env, then `install-<role>` — with the lab's values:
# the router's RDS and EFS stand-ins instead of the stack's DatabaseEndpoint and EfsDnsName, and
# password files instead of Secrets Manager. Then what the stack leaves to the operator:
#   management: `zone` (the first zone, no hosts yet) once the API answers; then it leaves its
#               SSH public key on the EFS stand-in for the hosts.
#   host:       once the management server's key is there, `install-host` again with that key
#               and CLOUDSTACK_REGISTER=yes: the host adds itself to the zone, as a host of the
#               Auto Scaling group does. So the machines may come up in any order
#               (vagrant-libvirt starts them in parallel).
# The CloudStack admin password is a fresh install's, "password": change it in the UI.
#
# Environment (from the Vagrantfile): ROLE (management or host), SERVICES_IP (the router's
# private address), CLOUDSTACK_VERSION, CLOUDSTACK_REPO_URL (optional), ZONE_DNS (optional:
# default the box's own resolver). The scripts are idempotent, and so is this.
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

: "${ROLE:?}" "${SERVICES_IP:?}" "${CLOUDSTACK_VERSION:?}"
CLOUDSTACK_REPO_URL=${CLOUDSTACK_REPO_URL:-}
ZONE_DNS=${ZONE_DNS:-}
CS=/usr/share/overlayd/cloudstack          # the package's CloudStack scripts
ENV_FILE=/etc/overlayd/cloudstack.env      # their inputs, as the user-data writes them
WAIT=3600                                  # seconds to wait for another machine's part
ADMIN_PW_FILE=/root/cloudstack-admin.pw
API_KEYS_FILE=/root/cloudstack-api.keys
MGMT_PUBKEY=/var/cloudstack/management/.ssh/id_rsa.pub
SHARED_PUBKEY=vagrant/management.pub       # on the EFS stand-in

[ -x "$CS/install-$ROLE" ] ||
    fail "CloudStack installer $CS/install-$ROLE is not in this overlayd package: build the package from a checkout that ships it (scripts/package), or INSTALL_CLOUDSTACK=false"

# write_env KEY=VALUE...: /etc/overlayd/cloudstack.env, root only, the version (and mirror) first.
write_env() {
    {
        echo "# Written by vagrant/provision/cloudstack.sh (the Vagrant lab): the inputs of $CS/*."
        echo "CLOUDSTACK_VERSION=$CLOUDSTACK_VERSION"
        [ -z "$CLOUDSTACK_REPO_URL" ] || echo "CLOUDSTACK_REPO_URL=$CLOUDSTACK_REPO_URL"
        printf '%s\n' "$@"
    } | (umask 077 && cat >"$ENV_FILE")
}

# run SCRIPT ARG...: one of the package's scripts, its output shown, its failure ours.
run() {
    local script=$1
    shift
    say "running: $CS/$script $*"
    "$CS/$script" "$@" || fail "$script failed (exit $?); fix, then: vagrant provision $(hostname -s) --provision-with cloudstack"
}

[ -s "$ADMIN_PW_FILE" ] || secret_file "$ADMIN_PW_FILE" password

provision_management() {
    wait_tcp "$SERVICES_IP" 3306 "$WAIT" "the router's database"
    wait_tcp "$SERVICES_IP" 2049 "$WAIT" "the router's NFS server"
    install -m 0600 "$LAB/db-admin.pw" /root/cloudstack-db-admin.pw
    [ -s /root/cloudstack-db-cloud.pw ] || secret_file /root/cloudstack-db-cloud.pw "$(random_password)"
    write_env "CLOUDSTACK_DB_HOST=$SERVICES_IP" \
        CLOUDSTACK_DB_PASSWORD_FILE=/root/cloudstack-db-cloud.pw \
        CLOUDSTACK_DB_ADMIN_PASSWORD_FILE=/root/cloudstack-db-admin.pw \
        "CLOUDSTACK_EFS_DNS=$SERVICES_IP"
    run install-management

    # The first zone (version and storage server from the same file).
    wait_api
    if [ -z "$ZONE_DNS" ]; then ZONE_DNS=$(box_resolver); fi
    [ -n "$ZONE_DNS" ] || fail "no resolver found for the zone's system VMs: set ZONE_DNS=<IPv4>"
    local keys=(--admin-password-file "$ADMIN_PW_FILE" --save-api-keys "$API_KEYS_FILE")
    if [ -s "$API_KEYS_FILE" ]; then keys=(--api-keys-file "$API_KEYS_FILE"); fi
    run zone "${keys[@]}" --dns "$ZONE_DNS"

    # The hosts need this public key in root's authorized_keys before CloudStack adds them.
    local waited=0
    until [ -s "$MGMT_PUBKEY" ]; do
        [ "$waited" -lt 600 ] || fail "$MGMT_PUBKEY did not appear"
        sleep 5
        waited=$((waited + 5))
    done
    mountpoint -q /mnt/efs || fail "/mnt/efs (the EFS stand-in) is not mounted"
    install -d -m 0755 /mnt/efs/vagrant
    install -m 0644 "$MGMT_PUBKEY" "/mnt/efs/$SHARED_PUBKEY"
    say "management server ready: http://localhost:8080/client/ (forwarded), admin / password"
}

# wait_api: until the management server answers on its API port (first start: minutes).
wait_api() {
    local waited=0 code
    while :; do
        code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' http://127.0.0.1:8080/client/api) || true
        case $code in 000 | 404 | 5??) ;; *) return 0 ;; esac
        [ "$waited" -lt "$WAIT" ] || fail "the CloudStack API did not answer in ${WAIT} s (last HTTP code $code)"
        if [ $((waited % 60)) -eq 0 ]; then say "waiting for the CloudStack API (HTTP $code) ..."; fi
        sleep 10
        waited=$((waited + 10))
    done
}

# box_resolver: the first resolver of the box that system VMs can reach through the router
# (the provider's NAT resolver; not a loopback stub, not link-local).
box_resolver() {
    local f=/etc/resolv.conf
    if [ -r /run/systemd/resolve/resolv.conf ]; then f=/run/systemd/resolve/resolv.conf; fi
    awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ && $2 !~ /^(127|169\.254)\./ { print $2; exit }' "$f"
}

provision_host() {
    # CloudStack's KVM agent needs hardware virtualisation inside this VM.
    grep -Eqw 'vmx|svm' /proc/cpuinfo ||
        fail "no vmx/svm CPU flag: nested virtualisation is off (see vagrant/README.md, Troubleshooting)"
    write_env
    run install-host

    # The management server's key, from the EFS stand-in (mounted read-only for the copy).
    local mnt waited=0
    mnt=$(mktemp -d)
    mount -t nfs4 -o ro,nfsvers=4.1 "$SERVICES_IP:/" "$mnt" || fail "cannot mount $SERVICES_IP:/ (the router's NFS)"
    until [ -s "$mnt/$SHARED_PUBKEY" ]; do
        if [ "$waited" -ge "$WAIT" ]; then
            umount "$mnt"
            fail "no $SHARED_PUBKEY from the management server after ${WAIT} s: is it provisioned?"
        fi
        if [ $((waited % 300)) -eq 0 ]; then say "waiting for the management server (its key on $SERVICES_IP:/$SHARED_PUBKEY) ..."; fi
        sleep 10
        waited=$((waited + 10))
    done
    install -m 0644 "$mnt/$SHARED_PUBKEY" /root/cloudstack-management.pub
    umount "$mnt"
    rmdir "$mnt"

    write_env CLOUDSTACK_MANAGEMENT_PUBKEY_FILE=/root/cloudstack-management.pub \
        CLOUDSTACK_REGISTER=yes "CLOUDSTACK_ADMIN_PASSWORD_FILE=$ADMIN_PW_FILE"
    run install-host
    say "host $(hostname -s) is in the zone"
}

case $ROLE in
management) provision_management ;;
host) provision_host ;;
*) fail "ROLE=$ROLE: management or host" ;;
esac
