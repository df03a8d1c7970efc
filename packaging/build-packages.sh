#!/usr/bin/env bash
# Builds the .deb and the .rpm of mediasoup-server from the release binary that already
# exists (bash worker-build/setup.sh && cargo build --release); it never builds the server.
# Output: packaging/.work/dist/mediasoup-server_<version>-1_<arch>.deb and
#         packaging/.work/dist/mediasoup-server-<version>-1.<arch>.rpm
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/install-tools.sh build

for f in target/release/mediasoup-server .env.example README.md LICENSE; do
    if [ ! -f "$f" ]; then
        echo "build-packages.sh: $f is missing. The binary comes from" \
             "'bash worker-build/setup.sh && cargo build --release'; .env.example, README.md" \
             "and LICENSE are part of the repository." >&2
        exit 1
    fi
done

work=packaging/.work
rm -rf "$work/bin" "$work/man" "$work/dist"
mkdir -p "$work/bin" "$work/man" "$work/dist"
# Both packages ship this stripped copy (Cargo.toml's deb assets and rpm assets name it).
strip --strip-unneeded -o "$work/bin/mediasoup-server" target/release/mediasoup-server
gzip -9n -c packaging/mediasoup-server.8 > "$work/man/mediasoup-server.8.gz"

cargo deb --no-build --output "$work/dist/"
cargo generate-rpm --output "$work/dist/"
ls -1 "$work"/dist/*
