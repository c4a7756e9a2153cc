#!/bin/sh
# Installs latentcam-edge from this unpacked package. On the device, as root:
#
#   sudo ./install.sh
#
# Then edit /etc/latentcam/edge.toml (host address, camera, device id, and
# the device key for an authenticated link: its [link] section says how),
# check it as the service user, and start the service:
#
#   sudo -u latentcam latentcam-edge doctor --config /etc/latentcam/edge.toml
#   sudo systemctl enable --now latentcam-edge
#
# DESTDIR=/some/dir stages the files there and touches nothing else (no
# user, no systemctl): how CI checks the package. An existing
# /etc/latentcam/edge.toml is kept.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="${DESTDIR:-}"

install -D -m 0755 "$here/latentcam-edge" "$root/usr/bin/latentcam-edge"
# LiteRT's library, for a build with the LiteRT backend (aarch64): where
# the binary's rpath ($ORIGIN/../lib/latentcam) finds it.
if [ -f "$here/lib/libLiteRt.so" ]; then
    install -D -m 0644 "$here/lib/libLiteRt.so" "$root/usr/lib/latentcam/libLiteRt.so"
fi
rm -rf "$root/usr/share/latentcam/models"
mkdir -p "$root/usr/share/latentcam"
cp -R "$here/models" "$root/usr/share/latentcam/models"
if [ ! -f "$root/etc/latentcam/edge.toml" ]; then
    install -D -m 0644 "$here/edge.toml" "$root/etc/latentcam/edge.toml"
else
    echo "install: keeping the existing /etc/latentcam/edge.toml"
fi
install -D -m 0644 "$here/latentcam-edge.service" "$root/etc/systemd/system/latentcam-edge.service"
install -D -m 0644 "$here/README.md" "$root/usr/share/doc/latentcam/README.md"

if [ -n "$root" ]; then
    echo "install: staged in $root"
    exit 0
fi
# The service's user, and the groups its unit names (systemd refuses to
# start a unit whose SupplementaryGroups do not exist).
for group in video dialout gpio; do
    getent group "$group" >/dev/null || groupadd --system "$group"
done
if ! id latentcam >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /var/lib/latentcam \
        --shell /usr/sbin/nologin --groups video,dialout,gpio latentcam
fi
systemctl daemon-reload
echo "install: done. Edit /etc/latentcam/edge.toml, then:"
echo "  sudo -u latentcam latentcam-edge doctor --config /etc/latentcam/edge.toml"
echo "  sudo systemctl enable --now latentcam-edge"
