"""Who the caller is: bearer tokens checked at the edge of every app, on by default.

Two kinds of bearer token are accepted (``Authorization: Bearer <token>``):

- **API keys** issued by the operator CLI below. A key is ``mlsd_<key id>_<secret>``; the key
  store (a state store, ``mlsd.state``: SQLite on a laptop, Postgres on a cluster) keeps only
  the SHA-256 of the secret (the secret is 256 random bits, so a fast
  hash is enough), compared in constant time. Apps read the store on every request, so a key
  created or revoked by the CLI applies at once, without a restart.
- **JWTs** from an identity provider, verified by PyJWT: signature (an allow-list of algorithms,
  the key from a file), expiry, audience and optionally issuer. ``sub`` is the user; ``scope``
  (space-separated) or ``scopes`` (a list) the scopes.

Scopes: ``search`` (read routes), ``write`` (uploads, events), ``admin`` (act for another user,
``/shadow``, detailed health, key management). ``user_id`` / ``owner`` come from the identity,
never from the request. ``auth: none`` (every caller is a local admin) is only for loopback:
it is refused at build time unless Serve binds loopback, and per request unless the peer is.

Operator CLI (works against the running apps' store)::

    python -m apps.auth create --user alice --scopes search,write   # prints the token once
    python -m apps.auth list
    python -m apps.auth revoke <key id>
    python -m apps.auth dev-token          # var/auth/dev-token (0600) for `make serve`
"""

import argparse
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ray
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from ray.serve.context import _get_global_client
from sqlalchemy import bindparam, insert, select, update

from apps.limits import edge
from mlsd.state import ADMIN, Caller, Log, StateError, may_change
from mlsd.state.schema import auth_keys as KEYS

ACTIVE_KEY = select(KEYS.c.user, KEYS.c.scopes, KEYS.c.digest).where(
    KEYS.c.key_id == bindparam("key_id"), KEYS.c.revoked.is_(None)
)

SCOPES = ("search", "write", "review", ADMIN)  # review: the harmful-content review queue
DEFAULT_KEY_STORE = "var/auth/keys.sqlite"  # a state store URL (mlsd.state), or a path
DEFAULT_DEV_TOKEN = "var/auth/dev-token"
USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
KEY_RE = re.compile(r"mlsd_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
JWT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def default_key_store() -> str:
    """Where the apps and the CLI look for keys unless told: one place for both."""
    return os.environ.get("MLSD_AUTH_KEY_STORE") or DEFAULT_KEY_STORE


bearer = HTTPBearer(auto_error=False, description="an API key (mlsd_...) or a JWT")


class JWTArgs(BaseModel):
    """Tokens from an identity provider (verified by PyJWT)."""

    model_config = ConfigDict(extra="forbid")

    key_file: str = Field(description="PEM public key (RS*/ES*/EdDSA) or a shared secret (HS*)")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"], min_length=1)
    audience: str = Field("mlsd", description="the aud claim tokens must carry")
    issuer: str | None = Field(None, description="the iss claim tokens must carry, if set")
    leeway_s: float = Field(30.0, ge=0, description="clock skew allowed on exp / nbf")


class IdentityLimit(BaseModel):
    """One identity's write rate (a service's), instead of the per-person default."""

    model_config = ConfigDict(extra="forbid")

    writes_per_minute: float = Field(gt=0)
    write_burst: int = Field(ge=1)


class AuthArgs(BaseModel):
    """``auth:`` of an app: where API keys live and, optionally, a JWT issuer."""

    model_config = ConfigDict(extra="forbid")

    key_store: str = Field(
        default_factory=lambda: default_key_store(),
        description="state store of hashed API keys: a path / sqlite:/// URL, or "
        f"postgresql+psycopg://... (default: $MLSD_AUTH_KEY_STORE or {DEFAULT_KEY_STORE})",
    )
    jwt: JWTArgs | None = None
    writes_per_minute: float = Field(600.0, gt=0, description="per identity, per ingress replica")
    write_burst: int = Field(60, ge=1, description="writes an identity may make at once")
    identity_limits: dict[str, IdentityLimit] = Field(
        default_factory=dict,
        description="identity -> its own write rate: a platform's backend scores every post "
        "with one service identity, which the per-person rate would throttle",
    )


AuthConfig = AuthArgs | Literal["none"]


@dataclass(frozen=True)
class Identity:
    user: str
    scopes: frozenset[str]
    via: str  # "key:<id>" | "jwt" | "none"

    @property
    def caller(self) -> Caller:
        """What the access rules (``mlsd.state.access``) are given: the user and admin or not."""
        return Caller.of(self.user, self.scopes)

    def has(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    def acting_as(self, requested: str | None) -> str:
        """The user a request acts for: the caller, or one whose items the caller may change
        (``mlsd.state.may_change``: admins only) -> 403 otherwise."""
        if requested is None:
            return self.user
        if not may_change(self.caller, requested):
            raise HTTPException(403, "acting for another user needs the admin scope")
        return requested


class AuthError(Exception):
    pass


def check_user(user: str) -> str:
    if not USER_RE.fullmatch(user):
        raise ValueError(f"user names are 1-128 of [A-Za-z0-9_.@-], got {user!r}")
    return user


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[str]:
    items = scopes.replace(",", " ").split() if isinstance(scopes, str) else list(scopes)
    bad = sorted(set(items) - set(SCOPES))
    if bad or not items:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {items!r}")
    return frozenset(items)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore(Log):
    """API keys, hashed, in the state layer (``mlsd.state``: one store every ingress replica
    on every node reads, so a key revoked anywhere is refused everywhere at once)."""

    @property
    def url(self) -> str:
        return str(self.db.url)

    def create(self, user: str, scopes: str | Iterable[str], note: str = "") -> str:
        """A new key; the token is returned once and never stored."""
        check_user(user)
        scope_set = parse_scopes(scopes)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        with self.db.write() as c:
            c.execute(
                insert(KEYS).values(
                    key_id=key_id,
                    user=user,
                    scopes=" ".join(sorted(scope_set)),
                    digest=_hash(secret),
                    created=time.time(),
                    revoked=None,
                    note=note,
                )
            )
        return f"mlsd_{key_id}_{secret}"

    def revoke(self, key_id: str) -> bool:
        with self.db.write() as c:
            n = c.execute(
                update(KEYS)
                .where(KEYS.c.key_id == key_id, KEYS.c.revoked.is_(None))
                .values(revoked=time.time())
            ).rowcount
        return n == 1

    def list(self) -> list[dict]:
        cols = ("key_id", "user", "scopes", "created", "revoked", "note")
        with self.db.read() as c:
            rows = c.execute(select(*(KEYS.c[k] for k in cols)).order_by(KEYS.c.created)).all()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def verify(self, token: str) -> Identity | None:
        m = KEY_RE.fullmatch(token)
        if m is None:
            return None
        key_id, secret = m.groups()
        with self.db.read() as c:  # every request: the hot statement
            found = self.db.rows(c, ACTIVE_KEY, {"key_id": key_id})
        row = found[0] if found else None
        digest = _hash(secret)
        # compare even when the id is unknown, so timing says nothing about which ids exist
        if not hmac.compare_digest(digest, row[2] if row else "0" * 64) or row is None:
            return None
        return Identity(row[0], frozenset(row[1].split()), f"key:{key_id}")


class JWTVerifier:
    def __init__(self, args: JWTArgs):
        import jwt  # PyJWT

        self.jwt, self.args = jwt, args
        raw = Path(args.key_file).read_bytes()
        symmetric = all(a.startswith("HS") for a in args.algorithms)
        if not symmetric and any(a.startswith("HS") for a in args.algorithms):
            raise ValueError("do not mix HS* with public-key algorithms (key confusion)")
        self.key = raw.strip() if symmetric else raw

    def verify(self, token: str) -> Identity | None:
        a = self.args
        try:
            claims = self.jwt.decode(
                token,
                self.key,
                algorithms=a.algorithms,
                audience=a.audience,
                issuer=a.issuer,
                leeway=a.leeway_s,
                options={"require": ["exp", "sub", "aud"] + (["iss"] if a.issuer else [])},
            )
        except self.jwt.PyJWTError:
            return None
        raw = claims.get("scopes", claims.get("scope", ""))
        try:
            scopes = parse_scopes(raw)
            user = check_user(str(claims["sub"]))
        except ValueError:
            return None
        return Identity(user, scopes, "jwt")


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


LOCAL_ADMIN = Identity("local", frozenset(SCOPES), "none")


class Authenticator:
    """What an ingress holds: the verifiers and the per-identity write limiter."""

    def __init__(self, config: AuthConfig):
        self.open = config == "none"
        self.keys = self.jwt = None
        self.limiter = None
        if not self.open:
            self.keys = KeyStore(config.key_store)
            self.jwt = JWTVerifier(config.jwt) if config.jwt else None
            self.limiter = RateLimiter(
                config.writes_per_minute / 60.0,
                config.write_burst,
                overrides={
                    who: (lim.writes_per_minute / 60.0, lim.write_burst)
                    for who, lim in config.identity_limits.items()
                },
            )

    def check(self) -> None:
        """Raise, naming the store, unless the key store can be read (a health check)."""
        if self.keys is not None:
            self.keys.check()

    def identify(self, request: Request) -> Identity:
        if self.open:
            peer = request.client.host if request.client else None
            if not is_loopback(peer):
                raise HTTPException(403, "auth: none serves loopback callers only")
            return LOCAL_ADMIN
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        token = token.strip()
        ident = None
        if KEY_RE.fullmatch(token):
            ident = self.keys.verify(token)
        elif self.jwt is not None and JWT_RE.fullmatch(token):
            ident = self.jwt.verify(token)
        if ident is None:
            raise HTTPException(
                401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"}
            )
        return ident


class RateLimiter:
    """Token bucket per identity (in one replica's memory; N replicas admit N x the rate)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_keys: int = 100_000,
        overrides: dict[str, tuple[float, int]] | None = None,
    ):
        self.rate, self.burst, self.max_keys = rate_per_s, float(burst), max_keys
        self.overrides = {who: (r, float(b)) for who, (r, b) in (overrides or {}).items()}
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, who: str, now: float | None = None) -> float:
        """0 if admitted, else the seconds until a token is due."""
        now = time.monotonic() if now is None else now
        rate, burst = self.overrides.get(who, (self.rate, self.burst))
        level, t = self.buckets.get(who, (burst, now))
        level = min(burst, level + (now - t) * rate)
        if level < 1.0:
            self.buckets[who] = (level, now)
            return (1.0 - level) / rate
        if len(self.buckets) >= self.max_keys and who not in self.buckets:
            self.buckets.clear()  # bounded memory; a reset only ever admits more
        self.buckets[who] = (level - 1.0, now)
        return 0.0


def require(scope: str) -> Callable:
    """A FastAPI dependency: the verified caller, who must hold ``scope`` (401 / 403).

    The ingress registers its :class:`Authenticator` (``apps.common.setup_edge``) in
    ``__init__``; until then every call is 503. Writes are also rate limited per identity
    (429 with Retry-After).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request, _=Depends(bearer)) -> Identity:  # noqa: B008

        auth: Authenticator | None = edge(request.app.title, "authenticator")
        if auth is None:
            raise HTTPException(503, "not ready")
        ident = auth.identify(request)
        if not ident.has(scope):
            raise HTTPException(403, f"this route needs the {scope!r} scope")
        if scope == "write" and auth.limiter is not None:
            wait = auth.limiter.take(ident.user)
            if wait > 0:
                raise HTTPException(
                    429, "too many writes; slow down", headers={"Retry-After": f"{wait:.0f}"}
                )
        return ident

    return dependency


def check_bind(config: AuthConfig, hosts: Iterable[str | None]) -> None:
    """``auth: none`` only when every address Serve binds is loopback (raises ValueError)."""
    if config != "none":
        return
    bad = [h for h in hosts if not is_loopback(h)]
    if bad:
        raise ValueError(
            f"auth: none is refused: Serve binds {', '.join(map(str, bad))}, not loopback only"
        )


def serve_hosts() -> list[str | None]:
    """The HTTP host(s) of the running Serve instance (empty when it cannot be asked)."""
    try:
        client = _get_global_client()
        cfg = ray.get(client._controller.get_http_config.remote(), timeout=10)
        return [cfg.host]
    except Exception:
        return []


# -- operator CLI ------------------------------------------------------------------------------


def dev_token(store: str, out: str) -> str:
    """The local development key (search, write, admin) in ``out`` (0600), made once."""
    path = Path(out)
    ks = KeyStore(store)
    if path.exists():
        token = path.read_text().strip()
        if ks.verify(token) is not None:
            return token
    token = ks.create("dev", SCOPES, note="make serve development key")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.auth", description=__doc__.split("\n")[0])
    p.add_argument("--store", default=default_key_store(), help="the apps' auth.key_store")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="a new API key; the token is printed once")
    c.add_argument("--user", required=True)
    c.add_argument("--scopes", default="search", help="comma-separated: search,write,admin")
    c.add_argument("--note", default="")
    sub.add_parser("list", help="keys (never their secrets)")
    r = sub.add_parser("revoke", help="revoke a key at once")
    r.add_argument("key_id")
    d = sub.add_parser("dev-token", help="the local development key (make serve)")
    d.add_argument("--out", default=DEFAULT_DEV_TOKEN)
    args = p.parse_args(argv)
    try:
        if args.cmd == "create":
            print(KeyStore(args.store).create(args.user, args.scopes, args.note))
        elif args.cmd == "list":
            for k in KeyStore(args.store).list():
                state = "revoked" if k["revoked"] else "active"
                print(f"{k['key_id']}  {k['user']:<20} {k['scopes']:<20} {state}  {k['note']}")
        elif args.cmd == "revoke":
            if not KeyStore(args.store).revoke(args.key_id):
                print(f"no active key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
        elif args.cmd == "dev-token":
            dev_token(args.store, args.out)
            print(
                f"development key (user dev; search, write, admin) in {args.out}:\n"
                f'  export MLSD_TOKEN="$(cat {args.out})"\n'
                '  curl -H "Authorization: Bearer $MLSD_TOKEN" '
                "http://127.0.0.1:8000/visual-search/health\n"
                "  pages: http://127.0.0.1:8000/visual-search/#token=$MLSD_TOKEN (and "
                "/video-search/, /recommendations/, /blurring/, /harmful-content/)"
            )
    except (ValueError, StateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
