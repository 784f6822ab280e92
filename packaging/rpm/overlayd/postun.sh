# shellcheck shell=sh
# overlayd %postun ($1: 0 removal, 1 upgrade). RPM has no purge: the state directory goes with
# the package.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 0 ]; then
    rm -rf /var/lib/overlayd
fi
