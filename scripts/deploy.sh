#!/usr/bin/env bash
# Copies an edge package to a device over ssh and installs it there.
#
#   scripts/deploy.sh [--dry-run] [--target TARGET] [--package FILE] HOST
#
# HOST is anything ssh accepts (pi@shop-door-1.local, an ssh config alias).
# TARGET defaults to aarch64-unknown-linux-gnu (64-bit Raspberry Pi OS,
# Jetson); armv7-unknown-linux-gnueabihf for 32-bit Raspberry Pi OS.
# Without --package the package is built first (scripts/package.sh).
# The device needs sudo for the install; a running service is restarted
# on the new version, a first install is left for you to configure.
# --dry-run prints every command instead of running it (builds nothing,
# needs no ssh).
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
target=aarch64-unknown-linux-gnu
package=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --target) target="$2"; shift ;;
        --package) package="$2"; shift ;;
        -*) echo "deploy: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
host="${1:?usage: deploy.sh [--dry-run] [--target TARGET] [--package FILE] HOST}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
name="latentcam-edge-$version-$target"
package="${package:-dist/$name.tar.gz}"

run() {
    if [ "$dry" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

if [ ! -f "$package" ] || [ "$dry" = 1 ]; then
    run bash scripts/package.sh "$target"
fi
remote_dir="/tmp/$name"
run scp "$package" "$host:/tmp/$name.tar.gz"
run ssh "$host" "rm -rf $remote_dir && tar -C /tmp -xzf /tmp/$name.tar.gz && sudo $remote_dir/install.sh && (sudo systemctl try-restart latentcam-edge; systemctl is-active latentcam-edge || true)"
echo "deploy: $name on $host. Check it there with:"
echo "  sudo -u latentcam latentcam-edge doctor --config /etc/latentcam/edge.toml"
