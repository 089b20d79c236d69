#!/usr/bin/env bash
# Packs a flowpool binary, the zstd tool and every shared library they load (the
# loader included) into DIR, with wrapper scripts in DIR/bin, so bench/kernels.sh
# can run on a machine that has no toolchain or packages:
#   bench/kernels/bundle.sh build/dev/flowpool build/bundle
#   PATH=build/bundle/bin:$PATH bench/kernels.sh build/bundle/bin/flowpool
set -euo pipefail
fp=$(realpath "$1")
out=$2
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/real"
for exe in "$fp" "$(command -v zstd)"; do
  name=$(basename "$exe")
  cp "$exe" "$out/real/$name"
  strip --strip-debug "$out/real/$name" 2>/dev/null || true
  ldd "$exe" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r lib; do cp -L "$lib" "$out/lib/"; done
  cat >"$out/bin/$name" <<SH
#!/bin/sh
d=\$(dirname "\$(readlink -f "\$0")")/..
exec "\$d/lib/ld-linux-x86-64.so.2" --library-path "\$d/lib" "\$d/real/$name" "\$@"
SH
  chmod +x "$out/bin/$name"
done
command -v parallel >/dev/null && cp "$(command -v parallel)" "$out/bin/parallel"
du -sh "$out"
