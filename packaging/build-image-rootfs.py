#!/usr/bin/env python3
"""Assembles the container image of packaging/Dockerfile without a Docker engine.

Writes the FROM-scratch image's single layer (the same files the Dockerfile copies: static
binary, CA bundle, passwd/group lines for uid 10001, state directory) as a reproducible
gzipped tar, and wraps it in an OCI image layout (oci-layout, index.json, blobs/) that
`skopeo copy oci:DIR:dbtune-agent docker-daemon:dbtune-agent:TAG` or `podman load` accept.

usage: build-image-rootfs.py BINARY OUTDIR [--ca-bundle PATH] [--arch amd64] [--variant v7]

--arch/--variant are the OCI platform of the binary (amd64; arm64 v8; arm v7): one image per
architecture, each from that architecture's static binary.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

UID = GID = 10001


def layer_tar(binary, ca_bundle, mtime):
    """Uncompressed layer tar bytes; entries sorted, fixed owners and mtimes."""
    entries = []  # (path, kind, mode, uid, gid, data)

    def d(path, mode=0o755, uid=0, gid=0):
        entries.append((path, "dir", mode, uid, gid, None))

    def f(path, data, mode=0o644):
        entries.append((path, "file", mode, 0, 0, data))

    for p in ["etc", "etc/dbtune", "etc/ssl", "etc/ssl/certs", "usr", "usr/bin",
              "var", "var/lib"]:
        d(p)
    d("var/lib/dbtune-agent", 0o750, UID, GID)
    f("etc/passwd", b"dbtune:x:10001:10001:DBtune agent:/var/lib/dbtune-agent:/sbin/nologin\n")
    f("etc/group", b"dbtune:x:10001:\n")
    with open(ca_bundle, "rb") as fh:
        f("etc/ssl/certs/ca-certificates.crt", fh.read())
    with open(binary, "rb") as fh:
        f("usr/bin/dbtune-agent", fh.read(), 0o755)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, kind, mode, uid, gid, data in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(path)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
            info.uname = info.gname = ""
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_blob(oci_dir, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(oci_dir, "blobs", "sha256", digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return "sha256:" + digest, len(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("outdir")
    ap.add_argument("--ca-bundle", default="/etc/ssl/certs/ca-certificates.crt")
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--variant", help="CPU variant of --arch (v8 for arm64, v7 for arm)")
    ap.add_argument("--version", default="dev")
    args = ap.parse_args()

    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    raw = layer_tar(args.binary, args.ca_bundle, mtime)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=mtime, compresslevel=9) as g:
        g.write(raw)
    layer = gz.getvalue()

    os.makedirs(args.outdir, exist_ok=True)
    tarball = os.path.join(args.outdir, "rootfs.tar.gz")
    with open(tarball, "wb") as fh:
        fh.write(layer)

    oci = os.path.join(args.outdir, "oci")
    os.makedirs(oci, exist_ok=True)
    with open(os.path.join(oci, "oci-layout"), "w") as fh:
        json.dump({"imageLayoutVersion": "1.0.0"}, fh)
    layer_digest, layer_size = write_blob(oci, layer)
    config = {
        "architecture": args.arch,
        "os": "linux",
        "config": {
            "User": "10001:10001",
            "Env": [
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                "DBT_STATE_DIR=/var/lib/dbtune-agent",
            ],
            "Entrypoint": ["/usr/bin/dbtune-agent"],
            "WorkingDir": "/var/lib/dbtune-agent",
            "Healthcheck": {
                "Test": ["CMD", "/usr/bin/dbtune-agent", "--health"],
                "Interval": 30_000_000_000, "Timeout": 5_000_000_000,
                "StartPeriod": 120_000_000_000, "Retries": 3,
            },
            "Labels": {"org.opencontainers.image.title": "dbtune-agent",
                       "org.opencontainers.image.version": args.version},
        },
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
        "history": [{"created_by": "packaging/build-image-rootfs.py"}],
    }
    platform = {"architecture": args.arch, "os": "linux"}
    if args.variant:
        config["variant"] = platform["variant"] = args.variant
    cfg_digest, cfg_size = write_blob(oci, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    }
    man_digest, man_size = write_blob(oci, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": man_digest, "size": man_size, "platform": platform,
                       "annotations": {"org.opencontainers.image.ref.name": "dbtune-agent"}}],
    }
    with open(os.path.join(oci, "index.json"), "w") as fh:
        json.dump(index, fh, sort_keys=True)
    print(f"layer {tarball}: {layer_size} bytes gzipped, {len(raw)} bytes uncompressed")
    print(f"oci layout {oci}: manifest {man_digest}")


if __name__ == "__main__":
    sys.exit(main())
