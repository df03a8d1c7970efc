# %post of mediasoup-server. $1 is 1 on first install, 2 or more on upgrade.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    systemd-sysctl /usr/lib/sysctl.d/60-mediasoup-server.conf || :
fi
if [ "$1" -eq 1 ]; then
    # Enabled but, as usual for RPM packages, not started: edit
    # /etc/mediasoup/server.env, then `systemctl start mediasoup-server`.
    systemctl --no-reload enable mediasoup-server.service >/dev/null 2>&1 || :
fi
exit 0
