#!/usr/bin/env bash
# Builds and runs upstream mediasoup's own C++ worker test suite (the Catch2 tree test/ of the
# mediasoup-sys crate, meson target mediasoup-worker-test) against exactly what the server links:
# the crate copy that setup.sh prepared (Debian OpenSSL/libuv, the libsrtp3 adapter, flatbuffers
# 24.12.23, the unordered_dense stand-in, our patches). Idempotent; re-runs rebuild only changes.
#
#   bash worker-build/upstream-tests.sh
#
# Works in its own copy under target/worker-tests/ and never writes into worker-build/vendor.
# Ends with the line `upstream worker tests: N passed, N failed, N skipped` (test cases) and
# exits non-zero if any failed. Tests that cannot run here are listed in worker-build/README.md
# ("Upstream worker tests"), each with its reason.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DL=$HERE/.cache/downloads
MEDIASOUP_SYS_VERSION=0.24.0
MS=$HERE/vendor/mediasoup-sys-$MEDIASOUP_SYS_VERSION
WORK=$ROOT/target/worker-tests
SRC=$WORK/src
BUILD=$WORK/build
PIPDIR=$WORK/pip
POOL=${DEBIAN_POOL_URL:-http://deb.debian.org/debian/pool/main}
# Catch2: the crate's catch2.wrap pins 3.16.0 (GitHub/wrapdb, unreachable here); Debian 12 has
# only Catch2 v2, trixie's pool has 3.7.1, which has everything the tests use (RangeEquals: 3.5).
CATCH2_TGZ=catch2_3.7.1.orig.tar.gz
CATCH2_PATH=c/catch2/$CATCH2_TGZ
CATCH2_SHA256=c991b247a1a0d7bb9c39aa35faf0fe9e19764213f28ffba3109388e62ee0269c
# A hung test must not eat the CI budget.
TEST_TIMEOUT=${UPSTREAM_TESTS_TIMEOUT:-1200}

log() { printf '== %s\n' "$*"; }
die() { printf 'upstream-tests: %s\n' "$*" >&2; exit 1; }

# --- Test cases that cannot run here (reasons in worker-build/README.md) ---------------------
# Whole test cases to exclude, by exact Catch2 name.
EXCLUDED_CASES=()
# "Scenario: RTP Packet": 3 of its top-level sections parse test/data/packet{1,2,3}.raw, which the crate
# package does not ship (Cargo.toml `include` lists only test/include and test/src; npm's mediasoup
# package has no worker/test/data either; only upstream's git repository has them). Its other
# sections run one by one with Catch2's -c; the case counts as passed when all of them pass.
PARTIAL_CASE="Scenario: RTP Packet" # Catch2 names a SCENARIO("X") "Scenario: X"
PARTIAL_CASE_FILE=test/src/RTC/RTP/TestPacket.cpp
PARTIAL_CASE_SECTIONS_TOTAL=24
PARTIAL_CASE_SECTIONS_SKIPPED=3

# --- 1. The crate copy prepared by setup.sh -------------------------------------------------
prepared() { # every subproject setup.sh fills, in the directory its .wrap names
  [ -f "$MS/meson.build" ] && [ -d "$MS/test/src" ] && [ -f "$MS/subprojects/libsrtp2/meson.build" ] || return 1
  local w d
  for w in libuv openssl libsrtp3 flatbuffers unordered-dense; do
    d=$(sed -n 's/^directory *= *//p' "$MS/subprojects/$w.wrap" 2>/dev/null)
    [ -n "$d" ] && [ -f "$MS/subprojects/$d/meson.build" ] || return 1
  done
}
# Stale when a kit file changed after setup.sh last replaced the copy (it touches build.rs then)
# and after this script last had setup.sh check it.
stale() {
  local newer
  newer=$(find "$HERE/setup.sh" "$HERE/shims" "$HERE/patches" -newer "$MS/build.rs" 2>/dev/null |
    { if [ -f "$WORK/.setup-checked" ]; then while read -r f; do [ "$f" -nt "$WORK/.setup-checked" ] && echo "$f"; done; else cat; fi; })
  [ -n "$newer" ]
}
if ! prepared || stale; then
  log "vendored crate missing or older than worker-build/: SKIP_BUILD=1 bash worker-build/setup.sh"
  SKIP_BUILD=1 bash "$HERE/setup.sh"
  prepared || die "setup.sh did not prepare $MS: run 'bash worker-build/setup.sh' and check its output"
  mkdir -p "$WORK" && touch "$WORK/.setup-checked"
fi
for tool in gcc g++ ccache python3 curl sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found: run 'bash worker-build/setup.sh' (it installs the build tools)"
done
export CCACHE_BASEDIR=$ROOT # objects hashed relative to the checkout, as in setup.sh

# --- 2. meson and ninja, the versions the crate's tasks.py pins, in our own pip target -------
pin() { sed -n "s/^$1 = os.getenv(\"$1\") or \"\\([^\"]*\\)\"\$/\\1/p" "$MS/tasks.py"; }
MESON_VERSION=$(pin MESON_VERSION)
NINJA_VERSION=$(pin NINJA_VERSION)
[ -n "$MESON_VERSION" ] && [ -n "$NINJA_VERSION" ] ||
  die "cannot read MESON_VERSION/NINJA_VERSION from $MS/tasks.py (crate changed? update this script)"
export PYTHONPATH=$PIPDIR${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE=1
export NINJA=$PIPDIR/bin/ninja
MESON=(python3 -m mesonbuild.mesonmain)
ninja_version=$("$NINJA" --version 2>/dev/null || true) # PyPI's ninja says e.g. 1.13.2.git.kitware...
if [ "$("${MESON[@]}" --version 2>/dev/null)" != "$MESON_VERSION" ] ||
   [ "${ninja_version%%.git*}" != "$NINJA_VERSION" ]; then
  log "pip install meson==$MESON_VERSION ninja==$NINJA_VERSION"
  rm -rf "$PIPDIR"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-user --target "$PIPDIR" \
    "meson==$MESON_VERSION" "ninja==$NINJA_VERSION" ||
    die "pip install of meson/ninja failed: check that PyPI is reachable and python3-pip is installed"
fi

# --- 3. Catch2 from Debian's pool, by sha256 ------------------------------------------------
mkdir -p "$DL" "$WORK"
if ! echo "$CATCH2_SHA256  $DL/$CATCH2_TGZ" | sha256sum -c --status 2>/dev/null; then
  log "download $CATCH2_TGZ"
  curl -fsSL --retry 3 -o "$DL/$CATCH2_TGZ.part" "$POOL/$CATCH2_PATH" ||
    die "download of $POOL/$CATCH2_PATH failed: check that the Debian archive is reachable (or set DEBIAN_POOL_URL to a mirror's pool/main)"
  got=$(sha256sum "$DL/$CATCH2_TGZ.part" | cut -d' ' -f1)
  [ "$got" = "$CATCH2_SHA256" ] ||
    { rm -f "$DL/$CATCH2_TGZ.part"; die "sha256 mismatch for $CATCH2_TGZ: expected $CATCH2_SHA256, got $got"; }
  mv "$DL/$CATCH2_TGZ.part" "$DL/$CATCH2_TGZ"
fi

# --- 4. Our own copy of the crate, with Catch2 as the subproject the wrap names -------------
CATCH2_DIR=$(sed -n 's/^directory *= *//p' "$MS/subprojects/catch2.wrap")
UV_DIR=$(sed -n 's/^directory *= *//p' "$MS/subprojects/libuv.wrap")
OSSL_DIR=$(sed -n 's/^directory *= *//p' "$MS/subprojects/openssl.wrap")
[ -n "$CATCH2_DIR" ] && [ -n "$UV_DIR" ] && [ -n "$OSSL_DIR" ] ||
  die "no directory= in $MS/subprojects/{catch2,libuv,openssl}.wrap (crate changed? update this script)"
# Mirror $MS into $SRC: only files whose content differs are rewritten (with a fresh mtime, so
# ninja rebuilds them even when the new content is older, e.g. a dropped patch); files gone
# from $MS are deleted; the Catch2 directory is ours and kept.
#
# One difference from $MS, in this copy only: the libuv and OpenSSL shims' dependencies carry
# no library, because the server links them into libmediasoup-worker.a through mediasoup's own
# link_whole list, which executables do not get. Here they get link_with (as the real wraps
# have) so that mediasoup-worker-test links, and their archives install: true, which only stops
# meson from copying them into every installed static library that links them (libsrtp2.a;
# nothing here is ever installed). The same objects, so the same OpenSSL and libuv.
python3 - "$MS" "$SRC" "subprojects/$CATCH2_DIR" "subprojects/$UV_DIR/meson.build" "subprojects/$OSSL_DIR/meson.build" <<'EOF'
import os, shutil, sys
src, dst, keep, uv, ossl = sys.argv[1:6]

def edit(text, rel, pairs):
    for old, new in pairs:
        if text.count(old) != 1:
            sys.exit(f"upstream-tests: worker-build/shims changed: {rel} no longer contains exactly one\n"
                     f"  {old}\nupdate the test copy's edits in worker-build/upstream-tests.sh (step 4)")
        text = text.replace(old, new)
    return text

TEST_ONLY = {
    uv: [
        ("objects: files(fs.read('uv.objects').strip().split('\\n')))",
         "objects: files(fs.read('uv.objects').strip().split('\\n')), install: true)"),
        ("declare_dependency(version: '.'.join(v))",
         "declare_dependency(version: '.'.join(v), link_with: libuv)"),
    ],
    ossl: [
        ("objects: files(fs.read('crypto.objects').strip().split('\\n')))",
         "objects: files(fs.read('crypto.objects').strip().split('\\n')), install: true)"),
        ("objects: files(fs.read('ssl.objects').strip().split('\\n')))",
         "objects: files(fs.read('ssl.objects').strip().split('\\n')), install: true)"),
        ("declare_dependency(version: version)",
         "declare_dependency(version: version, link_with: [libssl_lib, libcrypto_lib])"),
    ],
}

seen = set()
for d, dirs, files in os.walk(src):
    rel = os.path.relpath(d, src)
    os.makedirs(os.path.join(dst, rel), exist_ok=True)
    for f in files:
        r = os.path.normpath(os.path.join(rel, f))
        seen.add(r)
        s, t = os.path.join(src, r), os.path.join(dst, r)
        with open(s, 'rb') as fh:
            want = fh.read()
        if r in TEST_ONLY:
            want = edit(want.decode(), r, TEST_ONLY[r]).encode()
        try:
            with open(t, 'rb') as fh:
                same = fh.read() == want
        except (FileNotFoundError, IsADirectoryError):
            same = False
        if not same or not os.path.isfile(t) or os.path.islink(t):
            if os.path.lexists(t):
                os.remove(t)
            with open(t, 'wb') as fh:
                fh.write(want)
            shutil.copymode(s, t)
for d, dirs, files in os.walk(dst, topdown=True):
    rel = os.path.relpath(d, dst)
    if os.path.normpath(rel) == keep:
        dirs[:] = []
        continue
    for f in files:
        r = os.path.normpath(os.path.join(rel, f))
        if r not in seen:
            os.remove(os.path.join(dst, r))
    for sub in list(dirs):
        r = os.path.normpath(os.path.join(rel, sub))
        if r != keep and not os.path.isdir(os.path.join(src, r)):
            shutil.rmtree(os.path.join(dst, r))
            dirs.remove(sub)
EOF
C2=$SRC/subprojects/$CATCH2_DIR
if [ "$(cat "$C2/.debian-orig-sha256" 2>/dev/null)" != "$CATCH2_SHA256" ]; then
  log "unpack $CATCH2_TGZ into subprojects/$CATCH2_DIR"
  rm -rf "$C2" "$C2.tmp" && mkdir -p "$C2.tmp"
  tar xzf "$DL/$CATCH2_TGZ" -C "$C2.tmp" --strip-components=1
  echo "$CATCH2_SHA256" >"$C2.tmp/.debian-orig-sha256"
  mv "$C2.tmp" "$C2"
fi
grep -q '^catch2_dep *=' "$C2/src/catch2/meson.build" ||
  die "$C2 does not define catch2_dep, which the crate's meson.build takes from the subproject"

# --- 5. meson setup (once per option set) and compile ---------------------------------------
# The options tasks.py gives meson for a Release build (build.rs sets MEDIASOUP_BUILDTYPE=Release
# for cargo --release): every meson_options.txt option at its default, then
# ms_build_tests=true as its `test` task does; Catch2's own tests are not built.
defaults=$(sed -n "s/^ *option('\\([^']*\\)'.*value: *\\([^,)]*\\).*/-D\\1=\\2/p" "$SRC/meson_options.txt" | tr -d "'" | tr '\n' ' ')
OPTS="--prefix $WORK/install --bindir= --libdir= --buildtype release -Db_ndebug=true $defaults -Dms_build_tests=true -Dcatch2:tests=false"
if [ "$(cat "$BUILD/.upstream-tests-options" 2>/dev/null)" != "$OPTS" ]; then
  log "meson setup target/worker-tests/build"
  reconf=()
  if [ -f "$BUILD/meson-private/coredata.dat" ]; then reconf=(--reconfigure); else rm -rf "$BUILD"; fi
  # shellcheck disable=SC2086 # OPTS is a list of plain words
  (cd "$SRC" && "${MESON[@]}" setup "${reconf[@]}" $OPTS "$BUILD") >"$WORK/meson-setup.log" 2>&1 ||
    { tail -40 "$WORK/meson-setup.log" >&2; die "meson setup failed (full log: $WORK/meson-setup.log)"; }
  echo "$OPTS" >"$BUILD/.upstream-tests-options"
fi
log "meson compile mediasoup-worker-test (log: target/worker-tests/compile.log)"
(cd "$SRC" && "${MESON[@]}" compile -C "$BUILD" -j "$(nproc)" mediasoup-worker-test) >"$WORK/compile.log" 2>&1 ||
  { grep -E -B2 -A12 'error:|FAILED' "$WORK/compile.log" | head -80 >&2; die "building mediasoup-worker-test failed (full log: $WORK/compile.log)"; }
BIN=$BUILD/mediasoup-worker-test

# --- 6. Run: upstream runs it from the worker directory (test/data paths are relative) -------
# Each run writes Catch2's XML report; counts come from its <OverallResultsCases>.
cases() { # spec... -> the test case names Catch2 selects, one a line
  (cd "$SRC" && "$BIN" --list-tests --verbosity quiet "$@")
}
run_catch2() { # xml-file catch2-args...
  local xml=$1 rc=0
  shift
  (cd "$SRC" && timeout --kill-after=10 "$TEST_TIMEOUT" "$BIN" --reporter console::out=-::colour-mode=none \
    --reporter "xml::out=$xml" "$@") || rc=$?
  [ $rc -eq 124 ] && die "mediasoup-worker-test hung for ${TEST_TIMEOUT}s (see the last test case started in $xml)"
  if ! grep -q '<OverallResultsCases' "$xml" 2>/dev/null; then
    last=$(grep -o '<TestCase name="[^"]*"' "$xml" 2>/dev/null | tail -1 | sed 's/<TestCase name=//')
    die "mediasoup-worker-test died (exit status $rc) during test case ${last:-?}; its output is above"
  fi
  return 0
}
attr() { sed -n "s/.*<OverallResultsCases [^>]*$2=\"\\([0-9]*\\)\".*/\\1/p" "$1" | tail -1; }

all=$(cases | wc -l)
[ "$all" -gt 0 ] || die "mediasoup-worker-test lists no test cases"
spec=("~$PARTIAL_CASE")
for c in "${EXCLUDED_CASES[@]}"; do spec+=("~$c"); done
# Catch2 ANDs test specs given as separate arguments; escape what its spec parser treats specially.
esc() { printf '%s' "$1" | sed 's/[][\\,*"]/\\&/g'; }
specargs=()
for s in "${spec[@]}"; do specargs+=("~$(esc "${s#\~}")"); done
selected=$(cases "${specargs[@]}" | wc -l)
[ $((all - selected)) -eq ${#spec[@]} ] ||
  die "the exclusion list matched $((all - selected)) test cases instead of ${#spec[@]}: the crate's tests changed; update EXCLUDED_CASES/PARTIAL_CASE in $0"

log "run mediasoup-worker-test ($selected test cases)"
run_catch2 "$WORK/results.xml" "${specargs[@]}"
passed=$(( $(attr "$WORK/results.xml" successes) + $(attr "$WORK/results.xml" expectedFailures) ))
failed=$(attr "$WORK/results.xml" failures)
skipped=$(( $(attr "$WORK/results.xml" skips) + ${#EXCLUDED_CASES[@]} ))

# The partially runnable case: every top-level section that does not read a test/data file.
mapfile -t sections < <(sed -n 's/^\tSECTION("\(.*\)")$/\1/p' "$SRC/$PARTIAL_CASE_FILE")
runnable=()
for s in "${sections[@]}"; do [[ $s == *.raw* ]] || runnable+=("$s"); done
[ ${#sections[@]} -eq $PARTIAL_CASE_SECTIONS_TOTAL ] &&
  [ $((${#sections[@]} - ${#runnable[@]})) -eq $PARTIAL_CASE_SECTIONS_SKIPPED ] ||
  die "$PARTIAL_CASE_FILE now has ${#sections[@]} top-level sections (${#runnable[@]} without .raw files); expected $PARTIAL_CASE_SECTIONS_TOTAL/$((PARTIAL_CASE_SECTIONS_TOTAL - PARTIAL_CASE_SECTIONS_SKIPPED)): update this script"
log "run \"$PARTIAL_CASE\": ${#runnable[@]} of ${#sections[@]} sections (the other $PARTIAL_CASE_SECTIONS_SKIPPED need test/data/*.raw)"
bad=0
i=0
for s in "${runnable[@]}"; do
  i=$((i + 1))
  xml=$WORK/results-partial-$i.xml
  run_catch2 "$xml" "$(esc "$PARTIAL_CASE")" -c "$s" >"$WORK/results-partial-$i.log"
  # -c with a name that matches no section runs none and still "passes": check it was entered.
  if [ "$(attr "$xml" successes)" != 1 ] || [ "$(attr "$xml" failures)" != 0 ] ||
     ! python3 -c 'import sys, xml.etree.ElementTree as E
sys.exit(not any(e.get("name") == sys.argv[2] for e in E.parse(sys.argv[1]).iter("Section")))' "$xml" "$s"; then
    cat "$WORK/results-partial-$i.log"
    printf 'FAILED: "%s" section "%s"\n' "$PARTIAL_CASE" "$s"
    bad=1
  fi
done
if [ $bad -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

# The partial case counts as passed above when all its runnable sections pass; say so plainly.
printf '== partially run: "%s", %d of %d sections (%d need test/data/*.raw, which the crate does not ship)\n' \
  "$PARTIAL_CASE" ${#runnable[@]} ${#sections[@]} $PARTIAL_CASE_SECTIONS_SKIPPED
if [ ${#EXCLUDED_CASES[@]} -gt 0 ]; then
  printf '== excluded (counted as skipped): %s\n' "${EXCLUDED_CASES[@]}"
fi
echo "upstream worker tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
