#!/usr/bin/env bash
# Vagrant provisioning, the router only: what AWS puts around the cloud and a private network
# lacks. Run after overlayd.sh (overlayd has made the router: forwarding, and the NAT of overlay
# traffic leaving the underlay, `nat = true`).
#   1. Internet egress for the overlay. On EC2 the underlay (eth0) is also the way out, so
#      overlayd's NAT covers it; here the underlay is the private network, which goes nowhere,
#      and the way out is the box's NAT interface (the default route). System VMs (template
#      downloads) and guests need it: overlay sources leaving that interface are masqueraded
#      too, in a table of this lab's own (ip overlay_vagrant_egress; overlayd's stays untouched).
#   2. With CloudStack: the stand-ins of RDS MySQL (a MySQL/MariaDB server on the router's
#      private address, CloudStack's parameters, an "admin" user like the RDS master user) and
#      of EFS (an NFSv4 export whose root "/" is writable, like EFS's), both in the subnet.
#
# Environment (from the Vagrantfile): PRIVATE_IP, SUBNET (CIDR), OVERLAY_CIDR,
# INSTALL_CLOUDSTACK (true/false); the admin password comes as the uploaded file db-admin.pw.
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

: "${PRIVATE_IP:?}" "${SUBNET:?}" "${OVERLAY_CIDR:?}" "${INSTALL_CLOUDSTACK:?}"

# 1. Egress: a persistent nftables table, loaded at boot by a unit of its own.
nat_if=$(ip -4 route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
[ -n "$nat_if" ] || fail "no default route: where is the box's NAT interface?"
mkdir -p /etc/overlay-vagrant
cat >/etc/overlay-vagrant/egress.nft <<EOF
# Written by vagrant/provision/vpc-services.sh: overlay traffic leaving through $nat_if (the
# box's NAT interface, the lab's way to the internet) is masqueraded. Replaced whole each load.
table ip overlay_vagrant_egress
delete table ip overlay_vagrant_egress
table ip overlay_vagrant_egress {
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        oifname "$nat_if" ip saddr $OVERLAY_CIDR masquerade
    }
}
EOF
cat >/etc/systemd/system/overlay-vagrant-egress.service <<EOF
# Written by vagrant/provision/vpc-services.sh.
[Unit]
Description=Masquerade the overlay on $nat_if (Vagrant lab egress)
After=nftables.service overlayd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$(command -v nft) -f /etc/overlay-vagrant/egress.nft

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl enable -q overlay-vagrant-egress.service
systemctl restart overlay-vagrant-egress.service || fail "loading /etc/overlay-vagrant/egress.nft failed"
say "egress: overlay $OVERLAY_CIDR masqueraded on $nat_if"

if [ "$INSTALL_CLOUDSTACK" != true ]; then
    say "INSTALL_CLOUDSTACK=false: no database, no NFS"
    exit 0
fi

# 2a. The RDS stand-in. Debian 12 has MariaDB only; Ubuntu and EL have MySQL 8.0.
[ -r "$LAB/db-admin.pw" ] || fail "$LAB/db-admin.pw missing: run vagrant provision (it uploads it)"
IFS= read -r db_pw <"$LAB/db-admin.pw" || true
[ -n "$db_pw" ] || fail "$LAB/db-admin.pw is empty"
case $(pkg_family)/$(os_id) in
deb/debian) db_pkg=mariadb-server db_conf_dir=/etc/mysql/mariadb.conf.d db_service=mariadb ;;
deb/*) db_pkg=mysql-server db_conf_dir=/etc/mysql/mysql.conf.d db_service=mysql ;;
rpm/*) db_pkg=mysql-server db_conf_dir=/etc/my.cnf.d db_service=mysqld ;;
esac
pkg_install "$db_pkg"
# "zz-": read after the distribution's own file, which binds to 127.0.0.1.
cat >"$db_conf_dir/zz-overlay-vagrant.cnf" <<EOF
# Written by vagrant/provision/vpc-services.sh: the lab's RDS stand-in. The four CloudStack
# parameters of overlayctl's RDS parameter group, binary logging as the CloudStack guide asks.
[mysqld]
bind-address = $PRIVATE_IP
innodb_rollback_on_timeout = 1
innodb_lock_wait_timeout = 600
max_connections = 350
binlog_format = ROW
log-bin = mysql-bin
server-id = 1
EOF
systemctl enable -q "$db_service"
systemctl restart "$db_service" || fail "$db_service did not start: $(journalctl -u "$db_service" -n 5 --no-pager -o cat | tr '\n' ' ')"
# The admin user may connect from the subnet (the management server), like RDS's master user.
# SQL on standard input: the password is never on a command line.
subnet_net=${SUBNET%/*}
mysql -u root <<EOF || fail "creating the database admin user failed"
CREATE USER IF NOT EXISTS 'admin'@'$subnet_net/255.255.255.0' IDENTIFIED BY '$db_pw';
ALTER USER 'admin'@'$subnet_net/255.255.255.0' IDENTIFIED BY '$db_pw';
GRANT ALL PRIVILEGES ON *.* TO 'admin'@'$subnet_net/255.255.255.0' WITH GRANT OPTION;
EOF
say "database ($db_pkg) on $PRIVATE_IP:3306, user admin from $SUBNET"

# 2b. The EFS stand-in: NFSv4 with /srv/efs as the root ("<server>:/"), root not squashed (the
# management server creates zone1/primary and zone1/secondary there, as on EFS), open to the
# subnet (nodes) and the overlay (system VMs mount secondary storage from overlay addresses).
if [ "$(pkg_family)" = deb ]; then pkg_install nfs-kernel-server; else pkg_install nfs-utils; fi
install -d -m 0755 /srv/efs /srv/efs/vagrant
opts=rw,sync,no_root_squash,no_subtree_check,fsid=0
mkdir -p /etc/exports.d
printf '# Written by vagrant/provision/vpc-services.sh: the lab'"'"'s EFS stand-in.\n/srv/efs %s(%s) %s(%s)\n' \
    "$SUBNET" "$opts" "$OVERLAY_CIDR" "$opts" >/etc/exports.d/overlay-vagrant.exports
systemctl enable -q nfs-server
systemctl restart nfs-server || fail "nfs-server did not start"
exportfs -ra || fail "exportfs -ra failed"
say "NFS: $PRIVATE_IP:/ (/srv/efs) for $SUBNET and $OVERLAY_CIDR"
