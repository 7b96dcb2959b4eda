"""Versioned artifact store: every job writes weights + index + metadata + a manifest.

Layout under the store's root (a local folder, or any fsspec URI: s3://, gs://, ...)::

    <root>/<name>/<version>/manifest.json   config, data, metrics, git commit, file checksums
    <root>/<name>/<version>/<files...>
    <root>/<name>/LATEST                     the version ``latest`` resolves to

A version is only visible once its manifest is written (last), so a crashed job never leaves a
half-written "latest". Loading verifies every file against the manifest's checksum, and any
missing or corrupt file raises :class:`ArtifactError` naming it.

The checksums live in the manifest, so they catch corruption, not tampering. Against
tampering, the manifest itself is checked before anything is fetched or loaded: against a
pinned SHA-256 (``pins``: ``{"name/version": hex}``, e.g. from the serve config) and/or an
ed25519 signature (``manifest.json.sig``, made by a job whose store has a signing key;
``$MLSD_ARTIFACT_SIGNING_KEY``) checked with the operator's public key.

    python -m mlsd.artifacts keygen --out signing.pem     # + signing.pub.pem
    python -m mlsd.artifacts sign --store artifacts --key signing.pem visual_search latest
    python -m mlsd.artifacts digest --store artifacts visual_search latest
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"  # ed25519 signature of the manifest's exact bytes (raw, 64 B)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # artifact names
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # versions (no "/", no "..")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # one component of a file name


class ArtifactError(RuntimeError):
    """A missing, incomplete or corrupt artifact; the message names what and where."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ArtifactError(f"invalid artifact name {name!r} (letters, digits, '_' and '-')")
    return name


def check_version(version: str) -> str:
    """A version names one folder: a strict pattern, so neither ``LATEST`` nor a caller can
    point outside the artifact's own folder."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version) or ".." in version:
        raise ArtifactError(f"invalid artifact version {version!r}")
    return version


def check_file_name(rel: str) -> str:
    """A manifest's file name: relative, '/'-separated, every part a plain name (no '..', no
    absolute path, no backslash), so joining it onto a folder stays inside that folder."""
    parts = rel.split("/") if isinstance(rel, str) else []
    if not parts or not all(_PART.fullmatch(x) and x not in (".", "..") for x in parts):
        raise ArtifactError(f"unsafe file name {rel!r} in an artifact manifest")
    return rel


def _inside(base: Path, rel: str) -> Path:
    target = (base / check_file_name(rel)).resolve()
    if not target.is_relative_to(base.resolve()):
        raise ArtifactError(f"file name {rel!r} leaves the artifact folder {base}")
    return target


def default_cache_dir() -> Path:
    """A private (0700) cache of this user's for artifacts fetched from remote stores, never a
    shared temp folder whose files another user could have planted."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlsd" / "artifacts"
    return root


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ArtifactError(f"artifact cache {path} belongs to another user")
    if st.st_mode & 0o077:
        path.chmod(0o700)
    return path


def model_label(name: str, version: str, backend: str = "torch") -> str:
    """The one ``model_version`` format every app reports: ``<artifact>/<version>:<backend>``."""
    return f"{name}/{version}:{backend}"


def label_version(label: str) -> str:
    """The artifact version inside a model label (older labels were ``<version>:<backend>``)."""
    return label.split(":")[0].rsplit("/", 1)[-1]


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Artifact:
    """A loaded artifact version: a local folder with verified files and its manifest."""

    name: str
    version: str
    path: Path
    manifest: dict[str, Any]
    digest: str = ""  # sha256 of the manifest's bytes, as checked at load

    def file(self, name: str) -> Path:
        if name not in self.manifest.get("files", {}):
            raise ArtifactError(f"artifact {self.name}/{self.version} has no file {name!r}")
        return _inside(self.path, name)

    @property
    def config(self) -> dict:
        return self.manifest.get("config", {})


class ArtifactWriter:
    """Stage files locally, then :meth:`commit` uploads them and writes the manifest last."""

    def __init__(self, store: ArtifactStore, name: str, version: str):
        self.store, self.name, self.version = store, check_name(name), check_version(version)
        self.dir = Path(tempfile.mkdtemp(prefix=f"artifact-{name}-"))

    def path(self, filename: str) -> Path:
        return self.dir / filename

    def abort(self) -> None:
        """Drop what was staged: nothing of this version reaches the store."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Leaving the block by an exception drops the staged files (a committed version has
        none left): a failed job writes nothing to the store."""
        if exc_type is not None:
            self.abort()

    def commit(
        self,
        config: dict | None = None,
        data: dict | None = None,
        metrics: dict | None = None,
        extra: dict | None = None,
    ) -> str:
        files = {
            str(p.relative_to(self.dir)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(self.dir.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "name": self.name,
            "version": self.version,
            "created": dt.datetime.now(dt.UTC).isoformat(),
            "git_commit": git_commit(),
            "config": config or {},
            "data": data or {},
            "metrics": metrics or {},
            "files": files,
            **(extra or {}),
        }
        fs, root = self.store.fs, self.store.root
        dest = f"{root}/{self.name}/{self.version}"
        fs.makedirs(dest, exist_ok=True)
        for rel in files:
            fs.makedirs(os.path.dirname(f"{dest}/{rel}"), exist_ok=True)
            fs.put_file(str(self.dir / rel), f"{dest}/{rel}")
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        if self.store.signing_key is not None:  # the signature first: the manifest publishes
            with fs.open(f"{dest}/{SIGNATURE}", "wb") as f:
                f.write(sign_bytes(self.store.signing_key, body))
        with fs.open(f"{dest}/{MANIFEST}", "wb") as f:
            f.write(body)
        with fs.open(f"{root}/{self.name}/LATEST", "w") as f:
            f.write(self.version)
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.version


class ArtifactStore:
    """A store of named, versioned artifacts under a local folder or an fsspec URI."""

    def __init__(
        self,
        root: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        pins: dict[str, str] | None = None,
        public_key: str | bytes | None = None,
        signing_key: str | os.PathLike | None = None,
    ):
        """``pins``: ``{"name/version": manifest sha256}``; ``public_key``: PEM (text, or a
        path to it) of the ed25519 key whose signature every loaded manifest must carry;
        ``signing_key``: PEM path of the private key new versions are signed with (default
        ``$MLSD_ARTIFACT_SIGNING_KEY``)."""
        self.uri = str(root)
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        self.root = self.root.rstrip("/")
        self.is_local = getattr(self.fs, "protocol", None) in ("file", ("file", "local"))
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.pins = {k: v.removeprefix("sha256:").lower() for k, v in (pins or {}).items()}
        self.public_key = _read_pem(public_key) if public_key else None
        signing_key = signing_key or os.environ.get("MLSD_ARTIFACT_SIGNING_KEY") or None
        self.signing_key = _read_pem(signing_key) if signing_key else None

    @classmethod
    def open(cls, spec: str | dict) -> ArtifactStore:
        """A store from what a deployment is given: a URI, or ``{"uri", "pins",
        "public_key"}`` (``spec()``), so replicas check what the builder checked."""
        if isinstance(spec, str):
            return cls(spec)
        return cls(spec["uri"], pins=spec.get("pins"), public_key=spec.get("public_key"))

    def spec(self, pins: dict[str, str] | None = None) -> dict:
        pem = self.public_key.decode() if self.public_key else None
        return {"uri": self.uri, "pins": {**self.pins, **(pins or {})}, "public_key": pem}

    def manifest_digest(self, name: str, version: str = "latest") -> str:
        version = self.resolve(name, version)
        with self.fs.open(f"{self.root}/{name}/{version}/{MANIFEST}", "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def _check_manifest(self, name: str, version: str, raw: bytes, mpath: str) -> None:
        """The pinned digest and the signature, before anything else is read or written."""
        pin = self.pins.get(f"{name}/{version}")
        if pin is not None and hashlib.sha256(raw).hexdigest() != pin:
            raise ArtifactError(
                f"manifest {mpath} does not match its pinned sha256 {pin[:12]}... (tampered or "
                "replaced)"
            )
        if self.public_key is not None:
            spath = f"{self.root}/{name}/{version}/{SIGNATURE}"
            try:
                with self.fs.open(spath, "rb") as f:
                    sig = f.read(128)
            except FileNotFoundError:
                raise ArtifactError(f"manifest {mpath} is not signed (no {SIGNATURE})") from None
            if not verify_bytes(self.public_key, raw, sig):
                raise ArtifactError(f"manifest {mpath}: the signature does not verify")

    def new_version(self, name: str, version: str | None = None) -> ArtifactWriter:
        version = version or (
            dt.datetime.now(dt.UTC).strftime("v%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        )
        return ArtifactWriter(self, name, version)

    def versions(self, name: str) -> list[str]:
        base = f"{self.root}/{name}"
        if not self.fs.exists(base):
            return []
        out = []
        for p in self.fs.ls(base, detail=False):
            if self.fs.exists(f"{p}/{MANIFEST}"):
                out.append(os.path.basename(p.rstrip("/")))
        return sorted(out)

    def resolve(self, name: str, version: str = "latest") -> str:
        """The concrete version ``version`` names; raises if there is no such version."""
        check_name(name)
        if version != "latest":
            check_version(version)
            if not self.fs.exists(f"{self.root}/{name}/{version}/{MANIFEST}"):
                raise ArtifactError(
                    f"artifact {name}/{version} not found in {self.uri} "
                    f"(versions: {', '.join(self.versions(name)) or 'none'})"
                )
            return version
        pointer = f"{self.root}/{name}/LATEST"
        if not self.fs.exists(pointer):
            raise ArtifactError(
                f"no artifact {name!r} in {self.uri} (missing {pointer}); build it first"
            )
        with self.fs.open(pointer, "r") as f:
            latest = f.read().strip()
        try:
            return check_version(latest)
        except ArtifactError:
            raise ArtifactError(f"{pointer} names an invalid version {latest!r}") from None

    def load(self, name: str, version: str = "latest", verify: bool = True) -> Artifact:
        """Resolve, fetch (if remote) and verify an artifact version."""
        version = self.resolve(name, version)
        base = f"{self.root}/{name}/{version}"
        mpath = f"{base}/{MANIFEST}"
        if not self.fs.exists(mpath):
            raise ArtifactError(f"artifact {name}/{version} not found in {self.uri} ({mpath})")
        with self.fs.open(mpath, "rb") as f:
            raw = f.read(16 * 1024 * 1024 + 1)
        self._check_manifest(name, version, raw, mpath)
        try:
            manifest = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"corrupt manifest {mpath}: {e}") from e
        files = manifest.get("files", {}) if isinstance(manifest, dict) else None
        if not isinstance(files, dict):
            raise ArtifactError(f"corrupt manifest {mpath}: no file table")
        for rel in files:  # every name checked before anything is fetched or read
            check_file_name(rel)
        if self.is_local:
            local = Path(base)
        else:  # fetched into a private cache; a cached copy is used only if its checksum holds
            local = _private_dir(self.cache_dir) / name / version
            for rel, meta in files.items():
                target = _inside(local, rel)
                if target.exists() and _sha256(target) == meta.get("sha256"):
                    continue
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.fs.get_file(f"{base}/{rel}", str(target))
        for rel, meta in files.items():
            p = _inside(local, rel)
            if not p.exists():
                raise ArtifactError(f"artifact {name}/{version} is missing file {p}")
            if verify and _sha256(p) != meta.get("sha256"):
                raise ArtifactError(f"artifact {name}/{version}: file {p} is corrupt (checksum)")
        digest = hashlib.sha256(raw).hexdigest()
        return Artifact(name=name, version=version, path=local, manifest=manifest, digest=digest)


# -- signatures (ed25519, ``cryptography``) ------------------------------------------------------


def _read_pem(key: str | bytes | os.PathLike) -> bytes:
    if isinstance(key, bytes):
        return key
    text = str(key)
    return text.encode() if text.lstrip().startswith("-----BEGIN") else Path(text).read_bytes()


def sign_bytes(private_pem: bytes, data: bytes) -> bytes:

    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactError("the artifact signing key must be an ed25519 private key")
    return key.sign(data)


def verify_bytes(public_pem: bytes, data: bytes, signature: bytes) -> bool:

    key = serialization.load_pem_public_key(public_pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ArtifactError("the artifact public key must be an ed25519 public key")
    try:
        key.verify(signature, data)
        return True
    except InvalidSignature:
        return False


def keygen(out: str | os.PathLike) -> tuple[Path, Path]:
    """A new ed25519 key pair: ``out`` (private, 0600) and ``<out stem>.pub.pem``."""

    key = Ed25519PrivateKey.generate()
    priv = Path(out)
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    pub = priv.with_name(priv.stem + ".pub.pem")
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv, pub


def main(argv: list[str] | None = None) -> int:

    p = argparse.ArgumentParser(prog="python -m mlsd.artifacts")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="an ed25519 key pair for signing artifacts")
    k.add_argument("--out", required=True)
    for cmd in ("sign", "digest"):
        c = sub.add_parser(cmd, help=f"{cmd} an artifact version's manifest")
        c.add_argument("--store", default="artifacts")
        c.add_argument("name")
        c.add_argument("version", nargs="?", default="latest")
        if cmd == "sign":
            c.add_argument("--key", required=True, help="ed25519 private key (PEM)")
    a = p.parse_args(argv)
    if a.cmd == "keygen":
        priv, pub = keygen(a.out)
        print(f"private key {priv} (keep it secret), public key {pub} (serve config)")
        return 0
    store = ArtifactStore(a.store)
    version = store.resolve(a.name, a.version)
    mpath = f"{store.root}/{a.name}/{version}/{MANIFEST}"
    with store.fs.open(mpath, "rb") as f:
        raw = f.read()
    if a.cmd == "digest":
        print(f"{a.name}/{version} sha256:{hashlib.sha256(raw).hexdigest()}")
    else:
        with store.fs.open(f"{store.root}/{a.name}/{version}/{SIGNATURE}", "wb") as f:
            f.write(sign_bytes(_read_pem(a.key), raw))
        print(f"signed {mpath}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
