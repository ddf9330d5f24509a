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
# A well-formed worker answer: magic, confinement report, a small snapshot.
mkdir -p "$here/corpus/worker_answer"
python3 - "$here/corpus/worker_answer/minimal" <<'PY'
import json, struct, sys
c = json.dumps({k: {"state": "enforced", "detail": "x"} for k in ("rlimits", "no_new_privs", "landlock", "seccomp")})
s = json.dumps({"runtime_version": "8.0.4", "dac_revision": 1, "threads": [{"os_id": 1, "managed_id": 1, "state": 0,
    "lock_count": None, "address": 4096, "alive": True, "frames": [{"ip": 1, "sp": 2, "name": "A.B()", "runtime": False}],
    "lock_refs": []}], "sync_blocks": [], "heap": {"server_gc": False, "regions": True, "structures_valid": True,
    "segments": 1, "objects": 0, "bytes": 0, "free_objects": 0, "free_bytes": 0, "walked_bytes": 0, "resyncs": 0,
    "ranges": []}, "types": [], "roots": [], "finalizer_thread": None, "warnings": []})
with open(sys.argv[1], "wb") as f:
    f.write(b"CLRDUMP4")
    for part in (c, s):
        f.write(struct.pack("<Q", len(part)) + part.encode())
PY
