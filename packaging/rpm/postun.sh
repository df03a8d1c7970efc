# %postun of mediasoup-server. $1 is 0 when the package was erased, 1 after an upgrade.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -ge 1 ]; then
    systemctl try-restart mediasoup-server.service >/dev/null 2>&1 || :
fi
exit 0
