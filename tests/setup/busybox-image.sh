#!/usr/bin/env bash
# Builds the small local image the worker tests run their tasks in, without a registry: a
# rootfs of Debian's statically linked busybox, imported with `docker import`. Idempotent: an
# image already tagged is kept.
set -euo pipefail
image=${1:-taskfold-test/busybox:1}
if docker image inspect "$image" >/dev/null 2>&1; then exit 0; fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/work"
cp /bin/busybox "$root/bin/busybox"
# Relative links: `busybox --install -s` would write the host's absolute paths.
for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
tar --numeric-owner -C "$root" -cf - . \
    | docker import -c 'ENV PATH=/bin' -c 'WORKDIR /work' -c 'CMD ["/bin/sh"]' - "$image" >/dev/null
echo "built $image"
