#!/usr/bin/env bash
# Installs what packaging/test.sh, build-packages.sh and nspawn-check.sh need, skipping
# whatever is already there. Usage: install-tools.sh [build|test|nspawn]...
set -euo pipefail

apt_missing=()
need_apt() { # need_apt COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || apt_missing+=("$2")
}
need_cargo() { # need_cargo SUBCOMMAND CRATE VERSION (the version the packaging was tested with)
    if [[ $(cargo "$1" --version 2>/dev/null) != *" $3" ]]; then
        echo "installing $2 $3 (cargo install --locked)"
        cargo install --locked --quiet "$2@$3"
    fi
}

for what in "$@"; do
    case "$what" in
        build)
            need_cargo deb cargo-deb 3.8.0
            need_cargo generate-rpm cargo-generate-rpm 0.21.1
            need_apt strip binutils
            ;;
        test)
            need_apt lintian lintian
            need_apt rpm rpm
            need_apt rpmlint rpmlint
            need_apt promtool prometheus
            need_apt curl curl
            need_apt setpriv util-linux
            /usr/bin/python3 -c 'import yaml' 2>/dev/null || apt_missing+=(python3-yaml)
            ;;
        nspawn)
            need_apt debootstrap debootstrap
            need_apt systemd-nspawn systemd-container
            need_apt curl curl
            need_apt nsenter util-linux
            need_apt pgrep procps
            need_apt flock util-linux
            ;;
        *) echo "install-tools.sh: unknown group '$what' (build, test, nspawn)" >&2; exit 2 ;;
    esac
done

if [ ${#apt_missing[@]} -gt 0 ]; then
    echo "installing with apt: ${apt_missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
