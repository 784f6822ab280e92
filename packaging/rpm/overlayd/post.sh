# shellcheck shell=sh
# overlayd %post ($1: 1 install, 2 upgrade). Enabled, not started: the unit's ExecCondition
# (`overlayd configured`) keeps it idle until /etc/overlayd/overlayd.toml names a role. An
# upgrade restarts a running daemon; SIGTERM leaves the overlay up.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl enable overlayd.service >/dev/null 2>&1 || :
elif [ -d /run/systemd/system ]; then
    systemctl try-restart overlayd.service >/dev/null 2>&1 || :
fi
