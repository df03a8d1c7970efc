# %pre of mediasoup-server: the service account, created once, kept on erase (as the
# Fedora packaging guidelines ask, so that files it owned never pass to a reused id).
getent group mediasoup >/dev/null || groupadd --system mediasoup
getent passwd mediasoup >/dev/null || \
    useradd --system --gid mediasoup --home-dir / --no-create-home \
        --shell /sbin/nologin --comment "mediasoup-server daemon" mediasoup
exit 0
