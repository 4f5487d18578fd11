#!/usr/bin/env bash
# Builds the goim-rs image (what images/Dockerfile describes) without a container engine or a
# registry: from host-built release binaries and the host's own Debian 12 files.
#
#   scripts/images.sh              the release build, then the image
#   scripts/images.sh --no-build   the image from the release binaries already built
#
# Steps:
#   1. `cargo build --release --locked -p goim -p goim-operator --bins` (the workspace root alone
#      would build only the root package, not the operator).
#   2. Each binary stripped, its debug info (line tables) split off into <out>/debug/<bin>.debug
#      (objcopy --only-keep-debug, --strip-debug, --add-gnu-debuglink).
#   3. A root filesystem like Debian 12 slim's, but holding only what the binaries use: the
#      binaries in /usr/local/bin, exactly the shared libraries `ldd` lists (and the dpkg records
#      and copyright files of the packages they come from, for scanners and licences), the CA
#      bundle of ca-certificates, /etc/passwd and /etc/group with the non-root user 65532,
#      /etc/nsswitch.conf, a world-writable /tmp. No shell, no package manager.
#   4. The image: with podman when it is installed (apt-get install podman when missing and
#      GOIM_IMAGES_INSTALL=1): `podman import` with the OCI config (user, entrypoint, labels),
#      then saved as an OCI archive. Without podman: an OCI image layout written directly
#      (one layer), as a tarball (also with GOIM_IMAGES_PODMAN=0). Either loads with
#      `podman load -i` or `skopeo copy oci-archive:...`.
#   5. The image's filesystem exported (`podman export` of a created container, or the layer
#      unpacked) and every binary's `--version` run inside it with chroot as user 65532: each
#      must print `<bin> <version> (<git revision>)`.
#   6. Sizes.
#
# Output in $GOIM_IMAGES_OUT (default /var/tmp/goim-rs-images). Not run by CI (a release build
# takes long); the README (*The image*) says what it printed last.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${GOIM_IMAGES_OUT:-/var/tmp/goim-rs-images}"
bins=(goim goim-comet goim-logic goim-job goim-operator)
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start ))s)"; }

build=1
case "${1:-}" in
    --no-build) build=0 ;;
    "") ;;
    *) echo "usage: $0 [--no-build]" >&2; exit 64 ;;
esac
for tool in objcopy ldd chroot python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install binutils libc-bin coreutils python3)" >&2; exit 1; }
done

cd "$root"
if [[ $build == 1 ]]; then
    step "release build: cargo build --release --locked -p goim -p goim-operator --bins"
    cargo build --release --locked -p goim -p goim-operator --bins
fi
meta="$(cargo metadata --format-version 1 --no-deps)"
target="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$meta")"
version="$(python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "goim"))' <<<"$meta")"
release="$target/release"
for b in "${bins[@]}"; do
    [[ -x $release/$b ]] || { echo "no $release/$b: run without --no-build" >&2; exit 1; }
done
revision="$("$release/goim" --version | sed -nE 's/.*\(([^)]+)\)$/\1/p')"
image="goim-rs:$version"
echo "image $image, revision ${revision:-unknown}, binaries from $release"

step "strip, debug info split off"
rm -rf "$out"
mkdir -p "$out/debug" "$out/bin"
for b in "${bins[@]}"; do
    cp "$release/$b" "$out/bin/$b"
    objcopy --only-keep-debug "$out/bin/$b" "$out/debug/$b.debug"
    objcopy --strip-debug "$out/bin/$b"
    # Stores the file name and CRC of <bin>.debug: gdb finds it beside the binary or in
    # /usr/lib/debug/usr/local/bin/.
    (cd "$out/debug" && objcopy --add-gnu-debuglink="$b.debug" "$out/bin/$b")
    printf '  %-14s %4d MB -> %3d MB (+ %3d MB debug)\n' "$b" \
        $(( $(stat -c %s "$release/$b") >> 20 )) $(( $(stat -c %s "$out/bin/$b") >> 20 )) \
        $(( $(stat -c %s "$out/debug/$b.debug") >> 20 ))
done

step "root filesystem (Debian 12 files of this host)"
rootfs="$out/rootfs"
mkdir -p "$rootfs"/{usr/local/bin,usr/bin,usr/sbin,usr/lib,usr/lib64,etc/ssl/certs,home/nonroot,tmp,var/lib/dpkg/status.d,usr/share/doc}
# Debian 12's merged /usr.
ln -s usr/bin "$rootfs/bin"; ln -s usr/sbin "$rootfs/sbin"; ln -s usr/lib "$rootfs/lib"; ln -s usr/lib64 "$rootfs/lib64"
install -m 0755 "$out/bin/"* "$rootfs/usr/local/bin/"
declare -A packages=()
for lib in $(for b in "${bins[@]}"; do ldd "$out/bin/$b"; done | grep -oE '/[^ ]+' | sort -u); do
    real="$(readlink -f "$lib")"
    dir="$(readlink -f "$(dirname "$lib")")"
    mkdir -p "$rootfs$(dirname "$real")" "$rootfs$dir"
    cp -p "$real" "$rootfs$real"
    if [[ "$dir/$(basename "$lib")" != "$real" ]]; then
        ln -sf "$(realpath --relative-to="$dir" "$real")" "$rootfs$dir/$(basename "$lib")"
    fi
    pkg="$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1 || true)"
    [[ -z $pkg ]] && pkg="$(dpkg -S "$lib" 2>/dev/null | head -1 | cut -d: -f1 || true)"
    [[ -n $pkg ]] && packages[$pkg]=1
    echo "  $lib ${pkg:+($pkg)}"
done
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
packages[ca-certificates]=1
for pkg in "${!packages[@]}"; do
    dpkg-query -s "$pkg" > "$rootfs/var/lib/dpkg/status.d/$pkg" 2>/dev/null || true
    if [[ -f /usr/share/doc/$pkg/copyright ]]; then
        mkdir -p "$rootfs/usr/share/doc/$pkg"
        cp /usr/share/doc/"$pkg"/copyright "$rootfs/usr/share/doc/$pkg/"
    fi
done
cp /etc/os-release "$rootfs/usr/lib/os-release" 2>/dev/null || cp /usr/lib/os-release "$rootfs/usr/lib/os-release"
ln -s ../usr/lib/os-release "$rootfs/etc/os-release"
cat > "$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin
EOF
cat > "$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
cat > "$rootfs/etc/nsswitch.conf" <<'EOF'
passwd: files
group:  files
hosts:  files dns
EOF
chmod 1777 "$rootfs/tmp"
chown 65532:65532 "$rootfs/home/nonroot"
echo "  packages: ${!packages[*]}"

labels=(
    "org.opencontainers.image.title=goim-rs"
    "org.opencontainers.image.description=goim-rs push server: goim, goim-comet, goim-logic, goim-job and goim-operator"
    "org.opencontainers.image.version=$version"
    "org.opencontainers.image.revision=${revision:-unknown}"
    "org.opencontainers.image.licenses=MIT"
    "org.opencontainers.image.base.name=debian:12-slim (host files)"
)
archive="$out/goim-rs-$version.oci.tar"
exported="$out/exported"

if ! command -v podman >/dev/null && [[ ${GOIM_IMAGES_INSTALL:-0} == 1 ]]; then
    step "podman missing: apt-get install podman"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends podman
fi
if command -v podman >/dev/null && [[ ${GOIM_IMAGES_PODMAN:-1} == 1 ]]; then
    step "image with podman import (its own storage under $out, driver vfs)"
    pm=(podman --root "$out/podman/root" --runroot "$out/podman/run" --storage-driver vfs)
    changes=(--change 'USER 65532:65532' --change 'WORKDIR /home/nonroot'
        --change 'ENTRYPOINT ["/usr/local/bin/goim"]'
        --change 'ENV PATH=/usr/local/bin:/usr/bin')
    for p in 3100 3101 3102 3111; do changes+=(--change "EXPOSE $p"); done
    for l in "${labels[@]}"; do changes+=(--change "LABEL ${l%%=*}=\"${l#*=}\""); done
    tar --numeric-owner -C "$rootfs" -cf - . | "${pm[@]}" import "${changes[@]}" - "$image" >/dev/null
    "${pm[@]}" save --format oci-archive -o "$archive" "$image"
    "${pm[@]}" image inspect "$image" --format '  podman: {{.Id}} {{.Size}} bytes, user {{.Config.User}}, entrypoint {{.Config.Entrypoint}}'
    step "export the image's filesystem (podman create + export)"
    cid="$("${pm[@]}" create "$image")"
    mkdir -p "$exported"
    "${pm[@]}" export "$cid" | tar --numeric-owner -C "$exported" -xf -
    "${pm[@]}" rm "$cid" >/dev/null
else
    step "image as an OCI layout written directly (no podman)"
    python3 - "$rootfs" "$archive" "$image" "${labels[@]}" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile, time
rootfs, archive, image, labels = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
    for dirpath, dirs, files in os.walk(rootfs):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(dirpath, name)
            info = t.gettarinfo(path, os.path.relpath(path, rootfs))
            info.mtime = 0
            t.addfile(info, open(path, "rb") if info.isfile() else None)
layer_raw = raw.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer_raw).hexdigest()
layer_id, layer = blob(gzip.compress(layer_raw, mtime=0))
config = {
    "architecture": "amd64", "os": "linux",
    "config": {"User": "65532:65532", "WorkingDir": "/home/nonroot",
               "Entrypoint": ["/usr/local/bin/goim"], "Env": ["PATH=/usr/local/bin:/usr/bin"],
               "ExposedPorts": {f"{p}/tcp": {} for p in (3100, 3101, 3102, 3111)},
               "Labels": dict(l.split("=", 1) for l in labels)},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created_by": "scripts/images.sh"}],
}
config_id, config_data = blob(json.dumps(config, sort_keys=True).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_id, "size": len(config_data)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_id, "size": len(layer)}],
            "annotations": config["config"]["Labels"]}
manifest_id, manifest_data = blob(json.dumps(manifest, sort_keys=True).encode())
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": manifest["mediaType"], "digest": manifest_id, "size": len(manifest_data),
                        "annotations": {"org.opencontainers.image.ref.name": image.split(":", 1)[1],
                                        "io.containerd.image.name": image}}]}
with tarfile.open(archive, "w") as t:
    def add(name, data):
        info = tarfile.TarInfo(name); info.size = len(data); info.mtime = 0
        t.addfile(info, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", json.dumps(index).encode())
    for d, data in ((layer_id, layer), (config_id, config_data), (manifest_id, manifest_data)):
        add("blobs/sha256/" + d.split(":")[1], data)
print(f"  {archive}: manifest {manifest_id}, layer {len(layer)} bytes gzip, {len(layer_raw)} bytes unpacked")
EOF
    step "export the image's filesystem (the layer, from the archive)"
    mkdir -p "$exported"
    layer="$(python3 - "$archive" <<'EOF'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
index = json.load(t.extractfile("index.json"))
m = json.load(t.extractfile("blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
print("blobs/sha256/" + m["layers"][0]["digest"].split(":")[1])
EOF
)"
    tar -xOf "$archive" "$layer" | tar --numeric-owner -xzf - -C "$exported"
fi

step "every binary's --version inside the exported filesystem (chroot, user 65532)"
failed=0
for b in "${bins[@]}"; do
    want="$b $version (${revision:-unknown})"
    # No environment but PATH: nothing of the host leaks in. A binary without --version would
    # start instead; the timeout bounds that.
    got="$(timeout 10 env -i PATH=/usr/local/bin "$(command -v chroot)" --userspec=65532:65532 "$exported" \
        "/usr/local/bin/$b" --version 2>&1 | head -3 || true)"
    if [[ $got == "$want" ]]; then
        echo "  ok    $got"
    else
        echo "  FAIL  $b: want \"$want\", got: $got"
        failed=1
    fi
done

step "sizes"
printf '  %-40s %s\n' "image filesystem (unpacked)" "$(du -sh --apparent-size "$exported" | cut -f1)"
printf '  %-40s %s\n' "$(basename "$archive")" "$(du -sh --apparent-size "$archive" | cut -f1)"
printf '  %-40s %s\n' "split-off debug info ($out/debug)" "$(du -sh --apparent-size "$out/debug" | cut -f1)"
for b in "${bins[@]}"; do
    printf '  %-40s %s\n' "/usr/local/bin/$b" "$(du -h --apparent-size "$exported/usr/local/bin/$b" | cut -f1)"
done
printf '  %-40s %s\n' "shared libraries and the rest" \
    "$(( ( $(du -sb "$exported" | cut -f1) - $(du -cb "$exported"/usr/local/bin/* | tail -1 | cut -f1) ) >> 20 ))M"
exit "$failed"
