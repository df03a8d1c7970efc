#!/usr/bin/env bash
# The integration tests against a mediasoup worker built with AddressSanitizer and
# UndefinedBehaviorSanitizer (gcc's ASan + UBSan). Separate from the normal build: its own cargo
# target dir (target/sanitize), so the release build and its worker objects are left alone.
#
#   bash tests/sanitize.sh                       # tests protocol, server and ice_tcp (if present)
#   bash tests/sanitize.sh server                # only these test targets
#   bash tests/sanitize.sh server -- hung_worker # everything after -- goes to the test harness
#   SANITIZE_LEAKS=1 bash tests/sanitize.sh      # also LeakSanitizer at exit (see below)
#
# Needs what worker-build/setup.sh prepares (`SKIP_BUILD=1 bash worker-build/setup.sh` suffices).
# The first run is a cold C++ build (other compiler flags, so ccache has nothing yet); later
# runs reuse target/sanitize. Exit status: 0 no findings and all tests passed, 1 otherwise,
# 2 the set-up itself failed.
#
# How it is wired (stable Rust: the Rust code itself cannot be instrumented, the C++ worker can):
# - MESON_ARGS, which mediasoup-sys's tasks.py appends to `meson setup`, adds
#   -Db_sanitize=address,undefined (worker and the subprojects built from source: libsrtp,
#   flatbuffers; OpenSSL and libuv are Debian's prebuilt objects and stay uninstrumented).
# - The worker is a meson Debug build here (-O0 -g: exact stacks with file:line), selected the
#   crate's own way: its build script builds Debug when it has debug assertions.
# - The Rust binaries (server, tests) are linked by gcc with -fsanitize=address,undefined, which
#   puts libasan first among the libraries; --target keeps these flags off build scripts and
#   proc macros (rustc would dlopen an ASan-linked proc macro without the runtime).
# - The tests start the server with a cleared environment (tests/common/mod.rs), so
#   ASAN_OPTIONS cannot reach it: the options are compiled into every binary instead, with a
#   hook that writes UBSan's reports to files too (tests/sanitize/runtime-hooks.c). Reports go
#   to files, one per process, which this script collects per test target and prints; any
#   report fails the run even when the test itself passed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { printf 'sanitize: %s\n' "$*" >&2; exit 2; }
step() { printf '\n==== %s\n' "$*"; }

TARGET_DIR=$ROOT/target/sanitize
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
PROFILE_DIR=$TARGET_DIR/$TRIPLE/debug
REPORTS=$TARGET_DIR/reports   # the last run's: <test>.log and <test>/ with its report files
LIVE=$TARGET_DIR/reports-live # where the binaries write their reports (compiled in)

# --- what to run ------------------------------------------------------------------------------
TESTS=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do TESTS+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
HARNESS_ARGS=("$@")
if [ ${#TESTS[@]} -eq 0 ]; then
  TESTS=(protocol server)
  [ -f tests/ice_tcp.rs ] && TESTS+=(ice_tcp)
fi

# --- prerequisites ----------------------------------------------------------------------------
[ -f worker-build/vendor/mediasoup-sys-0.24.0/build.rs ] ||
  die "the prepared worker sources are missing: run 'SKIP_BUILD=1 bash worker-build/setup.sh' first"
for lib in libasan.so libubsan.so; do
  [ "$(gcc -print-file-name=$lib)" != $lib ] ||
    die "gcc has no $lib: install gcc's sanitizer runtimes (Debian: libasan8 libubsan1)"
done

# --- sanitizer options and hooks, compiled into every binary ----------------------------------
# ASan: every error is fatal for its process (exit code 1), reported with stack traces.
#   detect_stack_use_after_return and the initialization-order checks as in mediasoup's own
#   ASan test task.
# LeakSanitizer: off unless SANITIZE_LEAKS=1 (why: the README's Development section); its
#   suppressions are tests/sanitize/lsan-suppressions.txt.
# UBSan: keeps going after a report (halt_on_error=0), so one run lists every undefined
#   behaviour site; any report fails the run. UBSan's log_path must equal ASan's: libubsan
#   applies it to libasan's report file, not to its own (see runtime-hooks.c).
ASAN_OPTS="log_path=$LIVE/sanitizer:log_exe_name=1:print_stacktrace=1:halt_on_error=1"
ASAN_OPTS+=":abort_on_error=0:detect_stack_use_after_return=1:check_initialization_order=1"
ASAN_OPTS+=":strict_init_order=1:symbolize=1" # + detect_leaks=0/1, chosen at run time
UBSAN_OPTS="log_path=$LIVE/sanitizer:log_exe_name=1:print_stacktrace=1:halt_on_error=0"
UBSAN_OPTS+=":report_error_type=1"
LSAN_OPTS="suppressions=$ROOT/tests/sanitize/lsan-suppressions.txt:print_suppressions=0"
LEAKS_FLAG=$TARGET_DIR/leak-check-on
HOOKS_SRC=$ROOT/tests/sanitize/runtime-hooks.c
HOOKS_OBJ=$TARGET_DIR/sanitizer-hooks.o
HOOKS_KEY=$( (printf '%s\n' "$ASAN_OPTS" "$UBSAN_OPTS" "$LSAN_OPTS" "$LEAKS_FLAG"; cat "$HOOKS_SRC") |
  sha256sum | cut -d' ' -f1)
EXPORTS=(__asan_default_options __ubsan_default_options __lsan_default_options __ubsan_on_report)
mkdir -p "$TARGET_DIR" "$LIVE"
if [ "$(cat "$HOOKS_OBJ.key" 2>/dev/null)" != "$HOOKS_KEY" ]; then
  gcc -c -O1 -g -fPIC -Wall -Wextra -Werror -o "$HOOKS_OBJ" "$HOOKS_SRC" \
    -DSANITIZE_ASAN_OPTIONS="\"$ASAN_OPTS\"" -DSANITIZE_UBSAN_OPTIONS="\"$UBSAN_OPTS\"" \
    -DSANITIZE_LSAN_OPTIONS="\"$LSAN_OPTS\"" -DSANITIZE_UBSAN_FILE="\"$LIVE/ubsan\"" \
    -DSANITIZE_LEAKS_FLAG="\"$LEAKS_FLAG\""
  # Cargo does not know this object (it is a link argument): remove the binaries it went into,
  # the only executables in this profile's deps/, so that cargo links them again. Changing
  # RUSTFLAGS instead would rebuild every crate.
  find "$PROFILE_DIR/deps" -maxdepth 1 -type f -perm -u+x ! -name '*.*' -delete 2>/dev/null || true
  printf '%s' "$HOOKS_KEY" >"$HOOKS_OBJ.key"
fi

# --- build ------------------------------------------------------------------------------------
export CARGO_TARGET_DIR=$TARGET_DIR
# Read by mediasoup-sys's tasks.py (`meson setup ... $MESON_ARGS`). b_lundef=false as upstream's
# own sanitizer tasks do.
export MESON_ARGS="-Db_sanitize=address,undefined -Db_lundef=false"
# The worker's objects carry -g, for which ccache hashes the build directory; that directory
# (cargo's OUT_DIR) is new whenever cargo's hash of mediasoup-sys changes (a Rust update, other
# flags). Hashing without it lets such a rebuild come from the cache instead of a cold build.
export CCACHE_NOHASHDIR=1
# The crate's build script builds a Debug worker when it has debug assertions (the project's
# Cargo.toml turns them off for the normal dev build, to share the Release objects).
export CARGO_PROFILE_DEV_BUILD_OVERRIDE_DEBUG_ASSERTIONS=true
# rustc links with `cc -nodefaultlibs`, which drops the runtimes that -fsanitize adds;
# -Cdefault-linker-libraries=yes lets gcc add them as usual, libasan first.
RUSTFLAGS="-Cforce-frame-pointers=yes -Cdefault-linker-libraries=yes"
RUSTFLAGS+=" -Clink-arg=-fsanitize=address,undefined -Clink-arg=$HOOKS_OBJ"
for f in "${EXPORTS[@]}"; do
  RUSTFLAGS+=" -Clink-arg=-Wl,--export-dynamic-symbol=$f" # the shared runtimes look them up
done
export RUSTFLAGS
unset CARGO_ENCODED_RUSTFLAGS ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

# Cargo does not track MESON_ARGS (the build script declares no rerun-if-env-changed): when the
# worker's build settings change, drop mediasoup-sys's fingerprints in this target dir only, so
# that its build script runs again and meson reconfigures its build directory.
WORKER_KEY="$MESON_ARGS|debug-worker"
if [ "$(cat "$TARGET_DIR/.worker-config" 2>/dev/null)" != "$WORKER_KEY" ]; then
  rm -rf "$TARGET_DIR"/debug/.fingerprint/mediasoup-sys-* "$PROFILE_DIR"/.fingerprint/mediasoup-sys-*
fi

# The sanitizers must own malloc: without the default jemalloc feature.
TEST_FLAGS=(--no-default-features)
for t in "${TESTS[@]}"; do TEST_FLAGS+=(--test "$t"); done
step "build (log: $TARGET_DIR/build.log)"
if ! cargo test --target "$TRIPLE" "${TEST_FLAGS[@]}" --no-run >"$TARGET_DIR/build.log" 2>&1; then
  tail -40 "$TARGET_DIR/build.log" >&2
  die "build failed (full log: $TARGET_DIR/build.log)"
fi
printf '%s' "$WORKER_KEY" >"$TARGET_DIR/.worker-config"

# The build really is instrumented: the worker calls into both runtimes, libasan is linked, and
# the hooks are exported where the shared runtimes find them.
BIN=$PROFILE_DIR/mediasoup-server
undefined=$(nm -u "$BIN")
grep -q '__asan_report_load' <<<"$undefined" || die "$BIN: the worker is not built with ASan"
grep -q '__ubsan_handle_' <<<"$undefined" || die "$BIN: the worker is not built with UBSan"
exported=$(nm -D --defined-only "$BIN")
for f in "${EXPORTS[@]}"; do
  grep -q " $f\$" <<<"$exported" || die "$BIN: $f is not exported"
done
readelf -d "$BIN" | grep NEEDED | head -1 | grep -q libasan || die "$BIN: libasan is not its first library"

# The report pipeline itself: a process with a cleared environment, undefined behaviour and
# then a heap overflow must leave both reports in files.
rm -rf "$LIVE" && mkdir -p "$LIVE"
cat >"$TARGET_DIR/canary.c" <<'CANARY'
#include <stdlib.h>
int main(int argc, char **argv) {
  (void)argv;
  volatile int shift = 30 + argc;
  volatile int ub = 1 << shift;
  volatile char *p = malloc(4);
  p[4] = (char)ub;
  free((void *)p);
  return 0;
}
CANARY
gcc -g -fsanitize=address,undefined -o "$TARGET_DIR/canary" "$TARGET_DIR/canary.c" "$HOOKS_OBJ" \
  "${EXPORTS[@]/#/-Wl,--export-dynamic-symbol=}"
env -i "$TARGET_DIR/canary" 2>/dev/null && die "the sanitizer canary did not fail"
grep -qs 'ERROR: AddressSanitizer: heap-buffer-overflow' "$LIVE"/sanitizer.canary.* ||
  die "the canary left no ASan report in $LIVE: the compiled-in options do not take effect"
grep -qs 'runtime error: .*hift' "$LIVE"/ubsan.canary.* ||
  die "the canary left no UBSan report in $LIVE: the __ubsan_on_report hook does not take effect"
rm -rf "$LIVE" && mkdir -p "$LIVE"

# --- run --------------------------------------------------------------------------------------
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
if [ "${SANITIZE_LEAKS:-0}" = 1 ]; then
  touch "$LEAKS_FLAG" && trap 'rm -f "$LEAKS_FLAG"' EXIT
else
  rm -f "$LEAKS_FLAG"
fi
failed_tests=()
for t in "${TESTS[@]}"; do
  step "cargo test --test $t (ASan + UBSan)"
  status=0
  cargo test --target "$TRIPLE" --no-default-features --test "$t" -- "${HARNESS_ARGS[@]}" 2>&1 |
    tee "$REPORTS/$t.log" || status=$?
  [ "$status" = 0 ] || failed_tests+=("$t")
  mkdir -p "$REPORTS/$t"
  find "$LIVE" -type f -exec mv -t "$REPORTS/$t" {} +
done

# --- reports ----------------------------------------------------------------------------------
mapfile -t reports < <(find "$REPORTS" -mindepth 2 -type f | sort)
for r in "${reports[@]}"; do
  step "sanitizer report ${r#"$REPORTS"/}"
  cat "$r"
done
step "summary"
for t in "${TESTS[@]}"; do
  n=$(find "$REPORTS/$t" -type f | wc -l)
  result=$(grep -E '^test result:' "$REPORTS/$t.log" | tail -1 || true)
  printf '%-10s %s; %d sanitizer report file(s)\n' "$t" \
    "${result:-no test result (build or harness failure)}" "$n"
done
if [ ${#reports[@]} -gt 0 ]; then
  printf '\ndistinct findings (count, first line):\n'
  grep -hE '^SUMMARY: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)' "${reports[@]}" |
    sed "s|$ROOT/||g" | sort | uniq -c | sort -rn || true
fi
printf '\nreports and test output: %s\n' "$REPORTS"
if [ ${#reports[@]} -gt 0 ] || [ ${#failed_tests[@]} -gt 0 ]; then
  printf 'FAILED: %d sanitizer report file(s); failing test targets: %s\n' \
    "${#reports[@]}" "${failed_tests[*]:-none}"
  exit 1
fi
echo "OK: no sanitizer findings, all tests passed"
