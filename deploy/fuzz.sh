#!/usr/bin/env bash
# Fuzzes the image store's layer applier and archive loader (crates/engine/fuzz) with cargo-fuzz:
# every input must fail or stay beneath its directory, and the files beside it must not change.
# Run as root (layers make device nodes and whiteouts). FUZZ_SECONDS sets each target's run
# (default 30); findings land in crates/engine/fuzz/artifacts/. The seeds are tars made here
# whose links aim outside, at the fuzz targets' fixed world (/tmp/shoal-fuzz-world).
set -euo pipefail
cd "$(dirname "$0")/../crates/engine/fuzz"
seconds="${FUZZ_SECONDS:-30}"

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# cargo-fuzz asks rustc for the sanitizer flags of a nightly compiler; the machine has stable.
export RUSTC_BOOTSTRAP=1

corpus=$(mktemp -d)
trap 'rm -rf "$corpus" /tmp/shoal-fuzz-world' EXIT
python3 - "$corpus" <<'PY'
import io, json, os, sys, tarfile

corpus = sys.argv[1]
outside = "/tmp/shoal-fuzz-world/outside"

def layer(*entries):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for kind, name, extra in entries:
            info = tarfile.TarInfo(name)
            payload = None
            if kind == "file":
                payload = extra
                info.size = len(extra)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "char":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return data.getvalue()

layers = [
    layer(("symlink", "x", outside), ("file", "x/marker", b"changed")),
    layer(("symlink", "x", "../../../../../../../.." + outside), ("file", "x/.wh.marker", b"")),
    layer(("symlink", "x", outside), ("link", "y", "x/marker"), ("dir", "x/dir/new", None)),
    layer(("symlink", "marker", outside + "/marker"), ("file", "marker", b"in")),
    layer(("dir", "d", None), ("file", "d/.wh..wh..opq", b""), ("char", "d/n", None),
          ("fifo", "d/f", None), ("file", "etc/.wh...", b"")),
]
os.makedirs(f"{corpus}/unpack_layer")
os.makedirs(f"{corpus}/load_archive")
for n, data in enumerate(layers):
    open(f"{corpus}/unpack_layer/seed-{n}", "wb").write(data)
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["f:1"], "Layers": ["l/layer.tar"]}])
    archive = layer(("file", "manifest.json", manifest.encode()), ("file", "c.json", config),
                    ("file", "l/layer.tar", data), ("symlink", "l2", outside),
                    ("symlink", "index.json", outside + "/marker"))
    open(f"{corpus}/load_archive/seed-{n}", "wb").write(archive)
PY

for target in unpack_layer load_archive; do
  echo "==> cargo fuzz run $target (${seconds} s)"
  cargo fuzz run "$target" "$corpus/$target" -- -max_total_time="$seconds" -timeout=10
done
