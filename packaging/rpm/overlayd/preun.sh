# shellcheck shell=sh
# overlayd %preun ($1: 0 removal, 1 upgrade): on removal stop and disable (the overlay stays up;
# `overlayd down` removes it).
if [ "$1" -eq 0 ]; then
    systemctl disable --now overlayd.service >/dev/null 2>&1 || :
fi
