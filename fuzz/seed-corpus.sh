#!/bin/sh
# Seed the (git-ignored) corpus from the real nettrace fixtures. Each seed gets the
# target's 4-byte prefix: "3 chunk-size bytes follow", then chunk sizes 7, 200, 13.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/nettrace_reader"
mkdir -p "$out" "$here/corpus/decoders"
for f in "$here"/../crates/nettrace/tests/data/*.nettrace.gz; do
    name=$(basename "$f" .gz)
    { printf '\003\007\310\015'; gzip -dc "$f"; } > "$out/$name"
done
echo "seeded $(ls "$out" | wc -l) inputs into $out"
