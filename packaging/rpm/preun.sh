# %preun of mediasoup-server. $1 is 0 when the package is erased, 1 on upgrade.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now mediasoup-server.service >/dev/null 2>&1 || :
fi
exit 0
