#!/usr/bin/env bash
# Builds images/Dockerfile itself, for real, with Debian's buildah and no container engine, no
# OCI runtime and no registry: scripts/images.sh assembles the same filesystem by hand, this
# script checks that the Dockerfile (what users build) works. Not run by CI (a release build
# inside a chroot takes long); the README (*The image*) says what it printed last.
#
#   scripts/images-dockerfile.sh            the HEAD commit as the build context (other people's
#                                           uncommitted edits stay out), images/ of the work tree
#   scripts/images-dockerfile.sh --worktree the work tree as it is, as `docker build .` would see it
#
# Steps, each timed:
#   1. buildah and debootstrap (Debian packages; apt-get install when missing).
#   2. The base images, made locally because no registry is reachable, once (a stamp keeps them):
#      - runtime base: `debootstrap --variant=minbase bookworm`, slimmed like the official
#        debian:bookworm-slim (dpkg path excludes for docs, man pages and locales, apt lists
#        cleaned; the same deb.debian.org sources: bookworm, -updates, -security);
#      - build base: that plus gcc, libc6-dev and ca-certificates (what rust:*-slim installs)
#        and the host's Rust toolchain (rustc, cargo, rust-std, clippy, rustfmt; no HTML docs)
#        under RUSTUP_HOME=/usr/local/rustup with the rustup proxies in CARGO_HOME=/usr/local/cargo/bin,
#        the layout of the official rust image. Its version must be the Dockerfile's RUST_VERSION.
#        Here it also trusts the CAs of /usr/local/share/ca-certificates (this sandbox's egress
#        proxy: cargo fetches crates through it); the runtime base does not.
#      The Dockerfile takes them through its BUILD_IMAGE and RUNTIME_IMAGE build args; their
#      defaults stay the official images.
#   3. `nice -n 10 buildah bud --isolation chroot` of images/Dockerfile (the release build runs in
#      the chroot, crates from crates.io, Debian packages from deb.debian.org).
#   4. The image's filesystem exported (buildah from + mount), the image saved as an OCI archive,
#      and every binary's `--version` run inside the export with chroot as user 65532, as
#      scripts/images.sh does: each must print `<bin> <version> (<git revision>)`. The user,
#      entrypoint and labels are checked with buildah inspect.
#   5. Sizes.
#
# Everything lives under $GOIM_DOCKERFILE_WORK (default /var/tmp/goim-rs-dockerfile): buildah's
# own storage (driver vfs), the debootstrap root, the context, the export.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${GOIM_DOCKERFILE_WORK:-/var/tmp/goim-rs-dockerfile}"
bins=(goim goim-comet goim-logic goim-job goim-operator)
suite=bookworm
mirror="${GOIM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
start=$(date +%s)
step_start=
step() {
    local now
    now=$(date +%s)
    [[ -n $step_start ]] && echo "  (step took $((now - step_start))s)"
    step_start=$now
    echo
    echo "=== $* ($((now - start))s)"
}

context_kind="head"
case "${1:-}" in
    --worktree) context_kind=worktree ;;
    "") ;;
    *) echo "usage: $0 [--worktree]" >&2; exit 64 ;;
esac
[[ $(id -u) == 0 ]] || { echo "needs root (debootstrap, chroot, buildah's vfs storage)" >&2; exit 1; }

cd "$root"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
rust_version="$(sed -n 's/^ARG RUST_VERSION=//p' images/Dockerfile)"
host_rust="$(rustc --version | awk '{print $2}')"
[[ $host_rust == "$rust_version" || $host_rust == "$rust_version".* ]] || {
    echo "the host's rustc is $host_rust, images/Dockerfile wants RUST_VERSION=$rust_version" >&2
    exit 1
}
revision="$(git rev-parse --short=12 HEAD)"
image="localhost/goim-rs:$version"
runtime_base="localhost/goim-base/debian:$suite-slim"
build_base="localhost/goim-base/rust:$rust_version-slim-$suite"
bld=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
echo "image $image from images/Dockerfile, revision $revision, Rust $host_rust, context: $context_kind"

step "tools: buildah, debootstrap"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
fi
buildah --version
mkdir -p "$work"

# ------------------------------------------------------------------------------ base images

image_exists() { "${bld[@]}" inspect --type image "$1" >/dev/null 2>&1; }
stamp_ok() { [[ -f $work/.$1 && $(cat "$work/.$1") == "$2" ]] && image_exists "$3"; }

step "runtime base $runtime_base (debootstrap --variant=minbase $suite, slimmed)"
rootfs="$work/debootstrap-$suite"
runtime_stamp="$suite minbase slim v2"
if stamp_ok runtime-base "$runtime_stamp" "$runtime_base"; then
    echo "  there already"
else
    if [[ ! -f $rootfs/.complete ]]; then
        rm -rf "$rootfs"
        debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
            { tail -20 "$work/debootstrap.log"; exit 1; }
        # What the official image's debuerreotype --slimify does: no docs (copyright files
        # stay), man pages or locales, now or from packages installed later.
        cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
        find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
        rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/*
        printf 'Acquire::Languages "none";\n' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
        rm -f "$rootfs/etc/apt/sources.list"
        cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
        rm -f "$rootfs"/var/log/*.log "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf"
        touch "$rootfs/.complete"
    fi
    # Like the official image: apt keeps no package caches (pkgcache.bin and srcpkgcache.bin
    # are 37 MB each) and no downloaded .debs after it runs.
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    image_exists "$runtime_base" && "${bld[@]}" rmi "$runtime_base" >/dev/null
    ctr="$("${bld[@]}" from scratch)"
    mnt="$("${bld[@]}" mount "$ctr")"
    tar --numeric-owner --exclude=./.complete -C "$rootfs" -cf - . | tar --numeric-owner -xpf - -C "$mnt"
    "${bld[@]}" umount "$ctr" >/dev/null
    "${bld[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd bash --os linux --arch amd64 \
        --label "org.opencontainers.image.description=local stand-in for debian:$suite-slim (debootstrap --variant=minbase, slimmed)" \
        "$ctr"
    "${bld[@]}" commit --quiet --rm "$ctr" "$runtime_base" >/dev/null
    echo "$runtime_stamp" >"$work/.runtime-base"
fi
"${bld[@]}" images --format '  {{.Name}}:{{.Tag}} {{.Size}}' "$runtime_base"

step "build base $build_base (runtime base + gcc, libc6-dev + the host's Rust $host_rust)"
toolchain="$(rustc --print sysroot)"
# Not tied to the runtime base's stamp: a change there that cannot matter to the build stage
# (apt's caches) keeps this image, and with it buildah's cached build stage.
build_stamp="$suite minbase + $host_rust $(stat -c %Y "$toolchain/bin/rustc") v2"
if stamp_ok build-base "$build_stamp" "$build_base"; then
    echo "  there already"
else
    image_exists "$build_base" && "${bld[@]}" rmi "$build_base" >/dev/null
    ctr="$("${bld[@]}" from --pull=never "$runtime_base")"
    # What rust:*-slim installs before rustup (wget, which it purges again, not needed here).
    "${bld[@]}" run --isolation chroot --network host "$ctr" -- sh -ec \
        'apt-get update -qq
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates gcc libc6-dev >/dev/null
         rm -rf /var/lib/apt/lists/*'
    mnt="$("${bld[@]}" mount "$ctr")"
    triple=x86_64-unknown-linux-gnu
    tc="$mnt/usr/local/rustup/toolchains/$host_rust-$triple"
    mkdir -p "$tc" "$mnt/usr/local/cargo/bin"
    # The toolchain as rustup installed it on the host, without its 800 MB of HTML docs.
    tar -C "$toolchain" --exclude=./share/doc -cf - . | tar -xpf - -C "$tc"
    printf 'version = "12"\ndefault_toolchain = "%s-%s"\nprofile = "minimal"\n' "$host_rust" "$triple" \
        >"$mnt/usr/local/rustup/settings.toml"
    install -m 0755 "$(command -v rustup)" "$mnt/usr/local/cargo/bin/rustup"
    for p in cargo rustc rustdoc rust-gdb rust-lldb cargo-clippy clippy-driver cargo-fmt rustfmt; do
        ln -sf rustup "$mnt/usr/local/cargo/bin/$p"
    done
    # This sandbox reaches crates.io only through a TLS-intercepting egress proxy, whose CA the
    # host trusts in /usr/local/share/ca-certificates: the build base trusts it too, so that
    # cargo can fetch crates. Only the build stage sees it; the runtime stage installs Debian's
    # ca-certificates into the runtime base, which has none of these.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        mkdir -p "$mnt/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$mnt/usr/local/share/ca-certificates/"
    fi
    "${bld[@]}" umount "$ctr" >/dev/null
    "${bld[@]}" run --isolation chroot "$ctr" -- update-ca-certificates
    "${bld[@]}" config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
        --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env RUST_VERSION="$host_rust" \
        --label "org.opencontainers.image.description=local stand-in for rust:$rust_version-slim-$suite (the host's toolchain)" \
        "$ctr"
    "${bld[@]}" run --isolation chroot "$ctr" -- sh -c 'rustc --version && cargo --version'
    "${bld[@]}" commit --quiet --rm "$ctr" "$build_base" >/dev/null
    echo "$build_stamp" >"$work/.build-base"
fi
"${bld[@]}" images --format '  {{.Name}}:{{.Tag}} {{.Size}}' "$build_base"

# ------------------------------------------------------------------------------ the build

step "build context ($context_kind)"
if [[ $context_kind == head ]]; then
    context="$work/context"
    rm -rf "$context"
    mkdir -p "$context"
    git archive HEAD | tar -xf - -C "$context"
    # The Dockerfile and its ignore file as they are in the work tree (this script's subject).
    rm -rf "$context/images"
    cp -r images "$context/images"
else
    context="$root"
fi
echo "  $context: $(du -sh --exclude=target "$context" | cut -f1)"

step "buildah bud --isolation chroot -f images/Dockerfile (nice -n 10; the release build)"
# buildah (1.28 too) reads images/Dockerfile.dockerignore beside the Dockerfile, as BuildKit
# does. --layers: a second run reuses the build stage.
nice -n 10 "${bld[@]}" bud --isolation chroot --network host --pull=never --layers \
    -f "$context/images/Dockerfile" \
    --build-arg BUILD_IMAGE="$build_base" --build-arg RUNTIME_IMAGE="$runtime_base" \
    --build-arg GIT_REVISION="$revision" --build-arg VERSION="$version" \
    -t "$image" "$context" 2>&1 | tee "$work/build.log" | grep -vE '^ +(Compiling|Downloaded|Checking) ' || {
    echo "buildah bud failed; the whole log: $work/build.log" >&2
    exit 1
}
grep -E 'Finished .release' "$work/build.log" || true

# ------------------------------------------------------------------------------ check

step "export the image's filesystem (buildah from + mount) and save it as an OCI archive"
exported="$work/exported"
archive="$work/goim-rs-$version.dockerfile.oci.tar"
rm -rf "$exported" "$archive"
mkdir -p "$exported"
ctr="$("${bld[@]}" from --pull=never "$image")"
mnt="$("${bld[@]}" mount "$ctr")"
tar --numeric-owner -C "$mnt" -cf - . | tar --numeric-owner -xpf - -C "$exported"
"${bld[@]}" umount "$ctr" >/dev/null
"${bld[@]}" rm "$ctr" >/dev/null
"${bld[@]}" push --quiet "$image" "oci-archive:$archive:goim-rs:$version"
"${bld[@]}" inspect --type image --format \
    '  user {{.OCIv1.Config.User}}, workdir {{.OCIv1.Config.WorkingDir}}, entrypoint {{.OCIv1.Config.Entrypoint}}, ports {{.OCIv1.Config.ExposedPorts}}' \
    "$image"
# shellcheck disable=SC2016 # a Go template for buildah, not shell: $k and $v must stay literal
"${bld[@]}" inspect --type image --format '{{range $k, $v := .OCIv1.Config.Labels}}  {{$k}}={{$v}}{{"\n"}}{{end}}' "$image"

step "every binary's --version inside the exported filesystem (chroot, user 65532)"
failed=0
for b in "${bins[@]}"; do
    want="$b $version ($revision)"
    got="$(timeout 10 env -i PATH=/usr/local/bin "$(command -v chroot)" --userspec=65532:65532 "$exported" \
        "/usr/local/bin/$b" --version 2>&1 | head -3 || true)"
    if [[ $got == "$want" ]]; then
        echo "  ok    $got"
    else
        echo "  FAIL  $b: want \"$want\", got: $got"
        failed=1
    fi
done
# Stripped, with a .gnu_debuglink to the split-off debug info.
for b in "${bins[@]}"; do
    f="$exported/usr/local/bin/$b"
    if objdump -h "$f" | grep -q '\.debug_line'; then echo "  FAIL  $b still has line tables"; failed=1; fi
    objdump -h "$f" | grep -q '\.gnu_debuglink' || { echo "  FAIL  $b has no .gnu_debuglink"; failed=1; }
done
[[ $failed == 0 ]] && echo "  every binary stripped, each with a .gnu_debuglink"

step "sizes"
"${bld[@]}" images --format '  {{.Name}}:{{.Tag}} {{.Size}} (buildah: the unpacked layers)' "$image"
printf '  %-44s %s\n' "image filesystem (exported, unpacked)" "$(du -sh --apparent-size "$exported" | cut -f1)"
printf '  %-44s %s\n' "$(basename "$archive")" "$(du -sh --apparent-size "$archive" | cut -f1)"
for b in "${bins[@]}"; do
    printf '  %-44s %s\n' "/usr/local/bin/$b" "$(du -h --apparent-size "$exported/usr/local/bin/$b" | cut -f1)"
done
printf '  %-44s %s\n' "the runtime base ($runtime_base)" \
    "$(( ( $(du -sb "$exported" | cut -f1) - $(du -cb "$exported"/usr/local/bin/* | tail -1 | cut -f1) ) >> 20 ))M with the apt-installed libraries"
step "done"
exit "$failed"
