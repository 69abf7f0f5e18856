#!/usr/bin/env bash
# Builds a sample ext4 image and shows it through safefs: as root, mounted
# with bin/mount.safe (the kernel never parses the image); otherwise
# listed through the same parser with tools/ext4ls.
set -euo pipefail
cd "$(dirname "$0")/.."
img=bin/sample.img
tools/sample-image.sh "$img"
if [ "$(id -u)" -ne 0 ]; then
	echo "not root: listing the image through safefs's parser instead of mounting it"
	exec go run ./tools/ext4ls -R -x "$img"
fi
dir=$(mktemp -d)
trap 'umount "$dir" 2>/dev/null || true; rmdir "$dir"' EXIT
bin/mount.safe "$img" "$dir" -o ro -v
echo
grep " $dir " /proc/self/mounts
echo
ls -la "$dir" "$dir/docs"
echo
pid=$(pgrep safefsd | tail -1)
echo "the daemon serving it: $(tr '\0' ' ' < /proc/$pid/cmdline)"
grep -E '^(Uid|Gid|CapEff|NoNewPrivs|Seccomp):' /proc/$pid/status
umount "$dir"
echo "unmounted $dir"
