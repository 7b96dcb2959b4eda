"""Identity at the edge, without Ray: API keys, JWTs, scopes, acting for others, the CLI."""

from __future__ import annotations

import os
import stat
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient

from apps import auth
from apps.auth import AuthArgs, Authenticator, Identity, JWTArgs, KeyStore, RateLimiter, require
from apps.limits import EDGE
from apps.visual_search import VisualSearchArgs, build_app
from mlsd.state import StoreMissing, StoreURLError, init_store


def test_keys_are_stored_hashed_and_private(tmp_path):
    path = tmp_path / "a" / "keys.sqlite"
    ks = KeyStore(init_store(path))
    token = ks.create("alice", "search,write")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    secret = token.split("_", 2)[2]
    assert secret.encode() not in path.read_bytes()
    assert secret.encode() not in (tmp_path / "a" / "keys.sqlite-wal").read_bytes()


def test_keys_create_verify_revoke_on_both_backends(state_url):
    ks = KeyStore(state_url)
    token = ks.create("alice", "search,write")
    secret = token.split("_", 2)[2]
    ident = ks.verify(token)
    assert ident.user == "alice" and ident.scopes == {"search", "write"}
    assert ks.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # wrong secret
    assert ks.verify("mlsd_0000000000000000_" + secret) is None  # unknown id
    key_id = token.split("_")[1]
    assert ks.revoke(key_id) and ks.verify(token) is None and not ks.revoke(key_id)


def test_a_missing_key_store_is_an_error_not_a_new_file(tmp_path):
    with pytest.raises(StoreMissing, match="mlsd.state init"):
        KeyStore(tmp_path / "k.sqlite")
    assert not (tmp_path / "k.sqlite").exists()
    with pytest.raises(StoreURLError, match="looks like a URL"):
        KeyStore("postgresql:/keys")  # a typo never becomes a local file
    assert not os.path.exists("postgresql:")


@pytest.mark.parametrize("user", ["", "a b", "../x", "x" * 200, "a;drop"])
def test_bad_user_names_are_refused(tmp_path, user):
    with pytest.raises(ValueError):
        KeyStore(init_store(tmp_path / "k.sqlite")).create(user, "search")


def test_unknown_scopes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="scopes"):
        KeyStore(init_store(tmp_path / "k.sqlite")).create("a", "search,root")


def test_acting_for_another_user_needs_admin():
    alice = Identity("alice", frozenset({"search"}), "key:x")
    assert alice.acting_as(None) == "alice" == alice.acting_as("alice")
    with pytest.raises(HTTPException) as e:
        alice.acting_as("bob")
    assert e.value.status_code == 403
    assert Identity("ops", frozenset({"admin"}), "jwt").acting_as("bob") == "bob"


def _app(config, tmp_path) -> TestClient:
    api = FastAPI(title=f"test-{id(config)}-{tmp_path.name}")
    EDGE[api.title] = {"authenticator": Authenticator(config)}

    @api.get("/read")
    def read(who: Identity = Depends(require("search"))):
        return {"user": who.user}

    @api.post("/write")
    def write(who: Identity = Depends(require("write"))):
        return {"user": who.user}

    @api.get("/admin")
    def admin(who: Identity = Depends(require("admin"))):
        return {"user": who.user}

    return TestClient(api)


def test_routes_401_without_a_token_403_with_the_wrong_scope(tmp_path, state_url):
    store = state_url
    reader = KeyStore(store).create("reader", "search")
    client = _app(AuthArgs(key_store=str(store)), tmp_path)
    r = client.get("/read")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/read", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/read", headers={"Authorization": "Bearer nope"}).status_code == 401
    h = {"Authorization": f"Bearer {reader}"}
    assert client.get("/read", headers=h).json() == {"user": "reader"}
    assert client.post("/write", headers=h).status_code == 403
    assert client.get("/admin", headers=h).status_code == 403
    # a key created (or revoked) by another process applies at once
    writer = KeyStore(store).create("w", "write")
    assert client.post("/write", headers={"Authorization": f"Bearer {writer}"}).status_code == 200
    KeyStore(store).revoke(reader.split("_")[1])
    assert client.get("/read", headers=h).status_code == 401


def test_writes_are_rate_limited_per_identity(tmp_path):
    store = str(init_store(tmp_path / "keys.sqlite"))
    a, b = KeyStore(store).create("a", "write"), KeyStore(store).create("b", "write")
    client = _app(AuthArgs(key_store=str(store), writes_per_minute=1, write_burst=2), tmp_path)
    ha, hb = {"Authorization": f"Bearer {a}"}, {"Authorization": f"Bearer {b}"}
    codes = [client.post("/write", headers=ha).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert client.post("/write", headers=hb).status_code == 200  # b has its own bucket
    r = client.post("/write", headers=ha)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_a_service_identity_has_its_own_configured_rate(tmp_path):
    """A platform's backend scores every post as one identity: it gets the rate configured
    for it (auth.identity_limits), a person keeps the default."""
    store = str(init_store(tmp_path / "keys.sqlite"))
    feed, person = KeyStore(store).create("feed", "write"), KeyStore(store).create("p", "write")
    args = AuthArgs(
        key_store=str(store),
        writes_per_minute=1,
        write_burst=2,
        identity_limits={"feed": {"writes_per_minute": 60_000, "write_burst": 500}},
    )
    client = _app(args, tmp_path)
    hf, hp = {"Authorization": f"Bearer {feed}"}, {"Authorization": f"Bearer {person}"}
    assert all(client.post("/write", headers=hf).status_code == 200 for _ in range(100))
    assert [client.post("/write", headers=hp).status_code for _ in range(3)] == [200, 200, 429]


def test_rate_limiter_refills():
    lim = RateLimiter(rate_per_s=1.0, burst=1)
    assert lim.take("x", now=0.0) == 0.0 and lim.take("x", now=0.1) > 0
    assert lim.take("x", now=1.2) == 0.0


def test_jwt_signature_expiry_audience(tmp_path):
    jwt = pytest.importorskip("jwt")

    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "idp.pem").write_bytes(pem)
    cfg = AuthArgs(
        key_store=str(init_store(tmp_path / "k.sqlite")),
        jwt=JWTArgs(key_file=str(tmp_path / "idp.pem"), algorithms=["EdDSA"], audience="mlsd"),
    )
    client = _app(cfg, tmp_path)

    def token(key=private, **claims):
        base = {"sub": "carol", "aud": "mlsd", "exp": int(time.time()) + 60, "scope": "search"}
        return jwt.encode(base | claims, key, algorithm="EdDSA")

    def status(t):
        return client.get("/read", headers={"Authorization": f"Bearer {t}"}).status_code

    assert status(token()) == 200
    assert client.get("/read", headers={"Authorization": f"Bearer {token()}"}).json() == {
        "user": "carol"
    }
    assert status(token(exp=int(time.time()) - 3600)) == 401  # expired
    assert status(token(aud="other")) == 401
    assert status(token(key=ed25519.Ed25519PrivateKey.generate())) == 401  # wrong signer
    assert status(jwt.encode({"sub": "x", "aud": "mlsd"}, "k" * 32, algorithm="HS256")) == 401
    assert status(token(scope="search root")) == 401  # unknown scope: the token is refused
    assert client.post("/write", headers={"Authorization": f"Bearer {token()}"}).status_code == 403


def test_mixed_hmac_and_public_key_algorithms_are_refused(tmp_path):
    (tmp_path / "k").write_text("secret")
    with pytest.raises(ValueError, match="key confusion"):
        auth.JWTVerifier(JWTArgs(key_file=str(tmp_path / "k"), algorithms=["HS256", "RS256"]))


def test_auth_none_only_on_loopback(tmp_path):
    auth.check_bind("none", ["127.0.0.1", "::1", "localhost"])
    auth.check_bind(AuthArgs(key_store=str(tmp_path / "k")), ["0.0.0.0"])
    with pytest.raises(ValueError, match="0.0.0.0"):
        auth.check_bind("none", ["0.0.0.0"])
    client = _app("none", tmp_path)  # TestClient's peer is "testclient": not loopback
    assert client.get("/read").status_code == 403


def test_cli_creates_lists_revokes_and_makes_the_dev_token(tmp_path, capsys):
    store = str(tmp_path / "keys.sqlite")
    assert auth.main(["--store", store, "list"]) == 2  # no store: an error, not a new file
    assert "mlsd.state init" in capsys.readouterr().err and not os.path.exists(store)
    init_store(store)
    assert auth.main(["--store", store, "create", "--user", "alice", "--scopes", "search"]) == 0
    token = capsys.readouterr().out.strip()
    assert KeyStore(store).verify(token).user == "alice"
    assert auth.main(["--store", store, "list"]) == 0
    listing = capsys.readouterr().out
    assert (
        "alice" in listing and token.split("_", 2)[2] not in listing
    )  # the secret (it may hold "_")
    assert auth.main(["--store", store, "revoke", token.split("_")[1]]) == 0
    assert KeyStore(store).verify(token) is None
    assert auth.main(["--store", store, "create", "--user", "a b"]) == 2
    out = tmp_path / "dev" / "dev-token"
    assert auth.main(["--store", store, "dev-token", "--out", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    first = out.read_text().strip()
    assert KeyStore(store).verify(first).scopes == set(auth.SCOPES)
    auth.main(["--store", store, "dev-token", "--out", str(out)])
    assert out.read_text().strip() == first  # made once, kept while valid


def test_an_app_with_auth_none_is_refused_when_serve_binds_beyond_loopback(tiny_store, monkeypatch):

    args = VisualSearchArgs(artifact_store=str(tiny_store), live_log=None, auth="none")
    monkeypatch.setattr("apps.common.serve_hosts", lambda: ["0.0.0.0"])
    with pytest.raises(ValueError, match="auth: none is refused"):
        build_app(args)
    monkeypatch.setattr("apps.common.serve_hosts", lambda: ["127.0.0.1"])
    build_app(args)  # loopback only: allowed
