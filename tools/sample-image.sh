#!/usr/bin/env bash
# Builds a small ext4 sample image from a generated tree, without root:
#   tools/sample-image.sh OUT.img
set -euo pipefail
out=${1:?usage: tools/sample-image.sh OUT.img}
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
mkdir -p "$src/docs/nested/deeper" "$src/empty"
printf 'safefs reads this file without the kernel parsing the filesystem.\n' > "$src/README.txt"
seq 1 20000 > "$src/docs/numbers.txt"
for i in $(seq 1 200); do printf 'file %d\n' "$i" > "$src/docs/nested/f$i"; done
truncate -s 10M "$src/sparse.bin"
printf 'data in the middle' | dd of="$src/sparse.bin" bs=1 seek=5000000 conv=notrunc status=none
ln -s README.txt "$src/link-to-readme"
ln "$src/README.txt" "$src/docs/hardlink"
printf 'é' > "$src/docs/nested/deeper/naïve-名前.txt"
setfattr -n user.comment -v "hello from an xattr" "$src/README.txt" 2>/dev/null || true
mkfs.ext4 -q -F -L sample -d "$src" "$out" 32M
echo "built $out"
