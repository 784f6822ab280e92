#!/usr/bin/env bash
# Vagrant provisioning, every node: what cfn/cluster.yaml's user-data does on an EC2 instance —
# the overlayd package (checksum verified), /etc/overlayd/overlayd.toml, `systemctl enable --now
# overlayd`, wait until `overlayd status` says converged. Before that, the two things an EC2
# image has and a Vagrant box may not: the subnet's MTU on the private NIC, no host firewall.
#
# Environment (from the Vagrantfile): PRIVATE_IP (this node's address on the private network),
# MTU, OVERLAYD_TOML (the role's lines), PACKAGE (the uploaded package) or PACKAGE_URL, and
# PACKAGE_SHA256. Re-running it is safe: a changed configuration is reloaded.
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

: "${PRIVATE_IP:?}" "${MTU:?}" "${OVERLAYD_TOML:?}" "${PACKAGE_SHA256:?}"
PACKAGE=${PACKAGE:-}
PACKAGE_URL=${PACKAGE_URL:-}

# 0a. The underlay: the NIC holding the private address, at the private network's MTU (libvirt
# hands its MTU to virtio NICs; VirtualBox does not), set now and at every boot before overlayd.
underlay=$(iface_with "$PRIVATE_IP")
[ -n "$underlay" ] || fail "no interface has $PRIVATE_IP: the private network is not configured"
ip link set dev "$underlay" mtu "$MTU" || fail "cannot set MTU $MTU on $underlay"
cat >/etc/systemd/system/overlay-vagrant-mtu.service <<EOF
# Written by vagrant/provision/overlayd.sh: the lab's private network (the VPC subnet) has MTU $MTU.
[Unit]
Description=MTU $MTU on $underlay (Vagrant lab underlay)
BindsTo=sys-subsystem-net-devices-$underlay.device
After=sys-subsystem-net-devices-$underlay.device
Before=overlayd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$(command -v ip) link set dev $underlay mtu $MTU

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl enable -q overlay-vagrant-mtu.service
if command -v nmcli >/dev/null; then
    # NetworkManager re-applies a connection's MTU when it re-activates it: give it ours.
    conn=$(nmcli -g GENERAL.CONNECTION device show "$underlay" 2>/dev/null || true)
    if [ -n "$conn" ]; then nmcli connection modify "$conn" 802-3-ethernet.mtu "$MTU" || true; fi
fi
say "underlay $underlay ($PRIVATE_IP), MTU $MTU"

# 0b. No host firewall, as on the EC2 images (security groups filter there): firewalld, active on
# some EL boxes, would drop VXLAN (UDP 4789) and the router's forwarding.
if systemctl is-active -q firewalld 2>/dev/null; then
    systemctl disable --now -q firewalld
    say "firewalld stopped and disabled (EC2 images have no host firewall)"
fi

# 1. The overlayd package, checksum verified.
family=$(pkg_family)
if [ -n "$PACKAGE" ]; then
    pkg=$PACKAGE
else
    [ -n "$PACKAGE_URL" ] || fail "no package: the Vagrantfile passed neither PACKAGE nor PACKAGE_URL"
    pkg=/var/tmp/overlayd-package.${PACKAGE_URL##*.}
    curl -fsSL -m 300 --retry 5 -o "$pkg" "$PACKAGE_URL" || fail "downloading $PACKAGE_URL failed"
fi
case $pkg in
*."$family") ;;
*) fail "$pkg is not a .$family package, which this box ($(os_id)) installs" ;;
esac
got=$(sha256sum "$pkg" | cut -d ' ' -f 1)
[ "$got" = "$PACKAGE_SHA256" ] || fail "checksum of $pkg is $got, expected $PACKAGE_SHA256"
pkg_install "$pkg"
say "installed $(overlayd --version 2>/dev/null || echo overlayd) from $(basename "$pkg") (sha256 $got)"

# 2. overlayd.toml: the role's lines from the Vagrantfile and the underlay found above; checked
# before anything changes.
printf '# Written by vagrant/provision/overlayd.sh (the Vagrant lab); see vagrant/Vagrantfile.\n%s\nunderlay = "%s"\n' \
    "$OVERLAYD_TOML" "$underlay" >/etc/overlayd/overlayd.toml
out=$(overlayd validate 2>&1) || fail "overlayd validate: $out"

# 3. Start it (Type=notify: enable --now returns after the first converge); a re-provision with
# a changed file reloads it. Then wait for converged, as the user-data does.
was_active=no
systemctl is-active -q overlayd && was_active=yes
systemctl enable --now overlayd ||
    fail "overlayd did not start: $(journalctl -u overlayd -n 5 --no-pager -o cat 2>&1 | tr '\n' ' ')"
if [ "$was_active" = yes ]; then
    systemctl reload overlayd
    sleep 2   # let the reload's reconcile start before asking for the state
fi
for _ in $(seq 60); do
    overlayd status 2>/dev/null | grep -q '^state: *converged' && break
    sleep 1
done
overlayd status 2>/dev/null | grep -q '^state: *converged' ||
    fail "overlayd not converged after 60 s: $(overlayd status 2>&1 | grep -E '^(state|  -)' | tr '\n' ' ')"
overlayd status
say "overlayd converged"
