#!/usr/bin/env bash
# Installs what the end-to-end test needs; safe to run again (skips what is already there).
#   apt: chromium (the browser under test), prometheus (for promtool), opus-tools (opusinfo and
#        opusdec check recording.test.mjs's files), iproute2 (netns.sh, real-path: ip, ss),
#        util-linux (unshare, nsenter), nftables (selftest, single-port: drops UDP inside the
#        test's namespace), nginx + openssl (selftest: the README's wss:// proxy on a sub-path)
#   npm: tests/e2e/package-lock.json (mediasoup-client, playwright-core, esbuild), and
#        src/selftest/package-lock.json (the self-test page's bundle inputs, for its rebuild check)
set -euo pipefail

e2e_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

missing=()
{ command -v opusinfo && command -v opusdec; } >/dev/null 2>&1 || missing+=(opus-tools) # recording.test.mjs
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
{ command -v ip && command -v ss; } >/dev/null 2>&1 || missing+=(iproute2) # netns.sh, real-path
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux) # real-path
command -v nft >/dev/null 2>&1 || [[ -x /usr/sbin/nft ]] || missing+=(nftables) # selftest
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx) # selftest
command -v openssl >/dev/null 2>&1 || missing+=(openssl) # selftest
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: need root to apt-get install ${missing[*]}; run it as root or install them first" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]} with apt-get"
  apt-get update -q -o DPkg::Lock::Timeout=600
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
fi

if ! command -v node >/dev/null 2>&1; then
  echo "setup.sh: node (>= 20) is not installed; install it (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 20)); then
  echo "setup.sh: node $(node --version) is too old; the e2e test needs node >= 20" >&2
  exit 1
fi

# npm ci wipes node_modules, so only run it when the lock file changed since the last install.
# Also the self-test page's own pinned inputs: the e2e test rebuilds its bundle inside the
# network namespace, where npm cannot reach the registry.
for dir in "$e2e_dir" "$(cd "$e2e_dir/../../src/selftest" && pwd)"; do
  stamp="$dir/node_modules/.lock.sha256"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "setup.sh: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts)
    echo "$want" >"$stamp"
  fi
done
