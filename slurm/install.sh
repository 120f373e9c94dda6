#!/usr/bin/env bash
# Install the Debian packages of the local single-node SLURM cluster (Slurm + munge + slurmdbd + MariaDB core).
#
# Idempotent: packages already installed are skipped, and `apt-get update` runs only when apt cannot find or fetch
# what is missing (a fresh container has empty package lists). Works as root on Debian 12 without systemd: a
# temporary policy-rc.d stops the packages' maintainer scripts from starting daemons with their default
# configuration; slurm/start.sh starts them with ours.
set -euo pipefail

# procps (ps, pgrep: the scripts check PIDs with them) is not in minimal Debian images such as debian:12.
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core mariadb-client-core procps)

die() { echo "install.sh: error: $*" >&2; exit 2; }

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
    done
}

# apt knows a package when it has a candidate version; a never-updated container knows none.
apt_knows_all() {
    local pkg
    for pkg in "$@"; do
        apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]' || return 1
    done
}

# Keep package scripts from starting daemons (no systemd here; start.sh owns the daemons). Only installed when
# the machine has no policy of its own, and removed again on exit.
block_service_start() {
    local policy=/usr/sbin/policy-rc.d
    [[ -e $policy ]] && return 0
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
}

main() {
    command -v dpkg-query >/dev/null || die "this script needs a Debian-based system (dpkg/apt not found)"
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        echo "install.sh: all packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    ((EUID == 0)) || die "packages missing (${missing[*]}); run this script as root (sudo $0)"

    export DEBIAN_FRONTEND=noninteractive
    block_service_start
    local start=$SECONDS
    if ! apt_knows_all "${missing[@]}"; then
        echo "install.sh: apt-get update (package lists do not know: ${missing[*]})"
        apt-get update -q
    fi
    echo "install.sh: installing ${missing[*]}"
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        # Stale lists give 404s on fetch: refresh once and retry.
        echo "install.sh: install failed; retrying after apt-get update"
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
    echo "install.sh: done in $((SECONDS - start)) s ($(dpkg-query -W -f='${Version}' slurmctld) slurm)"
}

main "$@"
