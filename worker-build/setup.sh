#!/usr/bin/env bash
# Prepares the mediasoup C++ worker build on a Debian/Ubuntu machine that reaches only the
# package registries, then builds the server. Idempotent: with nothing changed it takes seconds.
#
#   bash worker-build/setup.sh               # apt, sources, flatc, crate copy, cargo build --release
#   SKIP_APT=1 bash worker-build/setup.sh    # skip the apt step (packages already present)
#   SKIP_BUILD=1 bash worker-build/setup.sh  # prepare only, do not run cargo build
#
# Why this exists: mediasoup-sys downloads five libraries as meson subprojects from hosts these
# machines cannot reach. We fill those subproject directories from Debian packages and sources
# instead, in a git-ignored copy of the crate that Cargo.toml patches in. See worker-build/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=$HERE/.cache
DL=$CACHE/downloads
DEPS=$CACHE/deps
SHIMS=$HERE/shims
MEDIASOUP_SYS_VERSION=0.24.0
MS=$HERE/vendor/mediasoup-sys-$MEDIASOUP_SYS_VERSION
POOL=${DEBIAN_POOL_URL:-http://deb.debian.org/debian/pool/main}

log() { printf '== %s\n' "$*"; }
die() { printf 'worker-build: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages (only the missing ones) ---------------------------------------------
APT_PKGS=(build-essential pkg-config cmake ccache curl ca-certificates python3-pip
          libssl-dev libuv1-dev)
if [ -z "${SKIP_APT:-}" ]; then
  missing=()
  for p in "${APT_PKGS[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = 'install ok installed' ] || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}: run as root or install them with apt-get"
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"

# --- 2. Sources from Debian's pool (trixie versions: their URLs stay valid), by sha256 --------
# name|path under the pool|sha256
SOURCES=(
  "libsrtp2_2.7.0.orig.tar.gz|libs/libsrtp2/libsrtp2_2.7.0.orig.tar.gz|54facb1727a557c2a76b91194dcb2d0a453aaf8e2d0cbbf1e3c2848c323e28ad"
  "golang-github-google-flatbuffers_24.12.23.orig.tar.gz|g/golang-github-google-flatbuffers/golang-github-google-flatbuffers_24.12.23.orig.tar.gz|7e2ef35f1af9e2aa0c6a7d0a09298c2cb86caf3d4f58c0658b306256e5bcab10"
)
mkdir -p "$DL" "$DEPS"
for s in "${SOURCES[@]}"; do
  IFS='|' read -r name path sum <<<"$s"
  echo "$sum  $DL/$name" | sha256sum -c --status 2>/dev/null && continue
  log "download $name"
  curl -fsSL --retry 3 -o "$DL/$name.part" "$POOL/$path" ||
    die "download of $POOL/$path failed: check that the Debian archive is reachable (or set DEBIAN_POOL_URL to a mirror's pool/main)"
  got=$(sha256sum "$DL/$name.part" | cut -d' ' -f1)
  [ "$got" = "$sum" ] || { rm -f "$DL/$name.part"; die "sha256 mismatch for $name: expected $sum, got $got (corrupt download or a changed mirror)"; }
  mv "$DL/$name.part" "$DL/$name"
done

extract() { # tarball destdir
  rm -rf "$2.tmp" && mkdir -p "$2.tmp"
  tar xzf "$1" -C "$2.tmp" --strip-components=1
  rm -rf "$2" && mv "$2.tmp" "$2"
}
[ -f "$DEPS/flatbuffers-src/CMakeLists.txt" ] ||
  extract "$DL/golang-github-google-flatbuffers_24.12.23.orig.tar.gz" "$DEPS/flatbuffers-src"
[ -f "$DEPS/libsrtp2-src/meson.build" ] || extract "$DL/libsrtp2_2.7.0.orig.tar.gz" "$DEPS/libsrtp2-src"

# --- 3. flatc 24.12.23, built once with upstream's CMake (ccache makes rebuilds cheap) --------
export CCACHE_BASEDIR=$ROOT
FLATC=$DEPS/flatc-build/flatc
if [ "$("$FLATC" --version 2>/dev/null)" != 'flatc version 24.12.23' ]; then
  log "build flatc"
  cmake -S "$DEPS/flatbuffers-src" -B "$DEPS/flatc-build" -DCMAKE_BUILD_TYPE=Release \
    -DFLATBUFFERS_BUILD_TESTS=OFF -DFLATBUFFERS_BUILD_FLATLIB=OFF \
    -DFLATBUFFERS_BUILD_FLATHASH=OFF -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
  cmake --build "$DEPS/flatc-build" --target flatc -j"$(nproc)" >/dev/null
fi

# --- 4. The pristine mediasoup-sys crate from crates.io, copied for patching -----------------
(cd "$HERE/fetch-crate" && cargo fetch -q) || die "cargo fetch of mediasoup-sys failed: check that crates.io is reachable"
CRATE_SRC=$(cd "$HERE/fetch-crate" && cargo metadata -q --format-version 1 | python3 -c '
import json, os, sys
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "mediasoup-sys"))')
rm -rf "$MS.tmp" && mkdir -p "$(dirname "$MS")" && cp -a "$CRATE_SRC" "$MS.tmp"

# --- 5. Subproject directories, named as in the crate's own .wrap files ----------------------
wrapdir() { sed -n 's/^directory *= *//p' "$MS.tmp/subprojects/$1.wrap"; }
put() { mkdir -p "$2" && cp -a "$1"/. "$2"/; }
SP=$MS.tmp/subprojects
SYSLIB=/usr/lib/$(gcc -print-multiarch)
UV=$SP/$(wrapdir libuv)
OSSL=$SP/$(wrapdir openssl)
put "$SHIMS/libuv" "$UV"
put "$SHIMS/openssl" "$OSSL"
python3 "$SHIMS/ar_objects.py" "$SYSLIB/libuv_a.a" "$UV/objects/uv" "$UV/uv.objects"
python3 "$SHIMS/ar_objects.py" "$SYSLIB/libcrypto.a" "$OSSL/objects/crypto" "$OSSL/crypto.objects"
python3 "$SHIMS/ar_objects.py" "$SYSLIB/libssl.a" "$OSSL/objects/ssl" "$OSSL/ssl.objects"
put "$SHIMS/libsrtp3" "$SP/$(wrapdir libsrtp3)"
put "$DEPS/libsrtp2-src" "$SP/libsrtp2"
put "$SHIMS/unordered_dense" "$SP/$(wrapdir unordered-dense)"
FB=$SP/$(wrapdir flatbuffers)
put "$DEPS/flatbuffers-src" "$FB"
cp "$SHIMS/flatbuffers/meson.build" "$FB/meson.build"
sed "s|@FLATC@|$FLATC|" "$SHIMS/flatbuffers/meson_options.txt.in" >"$FB/meson_options.txt"
rm -rf "$FB"/{tests,goldens,docs,java,net,swift,dart,kotlin,php,python,rust,ts,js,mjs,go,lua,lobster,nim,android,benchmarks,examples,samples}

# --- 6. Fixes to the worker's own sources, one file each; see the comment inside each patch --
for p in "$HERE"/patches/*.patch; do
  patch -s -p1 -d "$MS.tmp" <"$p" || die "patch $(basename "$p") does not apply to mediasoup-sys $MEDIASOUP_SYS_VERSION"
done
# Replace the copy only when it changed, so cargo's fingerprint of the path dependency (and the
# meson build directory) stays valid across re-runs.
if [ -d "$MS" ] && diff -rq "$MS" "$MS.tmp" >/dev/null 2>&1; then
  rm -rf "$MS.tmp"
else
  rm -rf "$MS" && mv "$MS.tmp" "$MS"
  touch "$MS/build.rs" # cp -a kept old mtimes: make cargo re-run the build script
fi

# --- 7. Build the server ---------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release)
fi
