# The managed plugin's root filesystem: Debian with the tools the backends
# run (mkfs.*, resize and fsck tools, btrfs, losetup, sshfs and ssh), and the static binary
# `make build` made. Keep the list in step with scripts/base-image.sh TOOLS.
# `make plugin` builds it and turns it into build/plugin/rootfs.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# Install only what the base lacks: scripts/base-image.sh's base already has
# the tools, so engines without network can build this too.
RUN set -e; missing=""; \
    for pair in mkfs.ext4:e2fsprogs resize2fs:e2fsprogs e2fsck:e2fsprogs mkfs.xfs:xfsprogs xfs_growfs:xfsprogs \
                mkfs.btrfs:btrfs-progs btrfstune:btrfs-progs losetup:util-linux \
                sshfs:sshfs ssh:openssh-client fusermount3:fuse3; do \
      command -v "${pair%%:*}" >/dev/null 2>&1 || case " $missing " in *" ${pair#*:} "*) ;; *) missing="$missing ${pair#*:}";; esac; \
    done; \
    if [ -n "$missing" ]; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing && \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    mkdir -p /data /ssh /mnt/volumes /run/docker/plugins
COPY build/stowage /usr/bin/stowage
ENTRYPOINT ["/usr/bin/stowage", "serve"]
