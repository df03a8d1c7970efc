# %postun of mediasoup-server. $1 is 0 when the package was erased, 1 after an upgrade.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -ge 1 ]; then
    systemctl try-restart mediasoup-server.service >/dev/null 2>&1 || :
else
    # cargo-generate-rpm cannot mark directories as owned by the package, so rpm leaves
    # them; remove the ones that are now empty (an edited server.env.rpmsave keeps
    # /etc/mediasoup).
    for dir in /usr/share/mediasoup-server/dashboards/provisioning \
        /usr/share/mediasoup-server/dashboards /usr/share/mediasoup-server/alerts \
        /usr/share/mediasoup-server /usr/share/doc/mediasoup-server \
        /usr/share/licenses/mediasoup-server /etc/mediasoup; do
        rmdir "$dir" 2>/dev/null || :
    done
fi
exit 0
