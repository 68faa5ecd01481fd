"""A loopback stand-in for Google's token information, signing-key and token endpoints.

It speaks their contracts: `POST /tokeninfo` with `access_token=...` (GET with the query
too) answers the token's claims with `expires_in`, or 400 `invalid_token` for one it does
not know or that expired; `GET /certs` answers `{key id: PEM certificate}` with a
`Cache-Control: max-age`; `POST /token` exchanges a service account's signed assertion
with a `target_audience` for an ID token. ID tokens are signed here with a key made for
the test.
"""

from __future__ import annotations

import datetime
import http.server
import json
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


class Key:
    """An RSA key with a self-signed certificate, as Google publishes its signing keys."""

    def __init__(self, kid: str):
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.private, hashes.SHA256())
        )

    def sign(self, claims: dict) -> str:
        from google.auth import crypt, jwt

        pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        signer = crypt.RSASigner.from_string(pem, key_id=self.kid)
        return jwt.encode(signer, claims).decode()

    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


class GoogleStandIn:
    """The two endpoints on one loopback port; `calls` counts what each was asked."""

    def __init__(self):
        self.key = Key("key-1")
        self.access: dict[str, dict] = {}  # access token -> claims with an absolute `exp`
        self.down = False
        self.calls = {"tokeninfo": 0, "certs": 0, "token": 0}
        self._lock = threading.Lock()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/certs":
                    stand_in._count("certs")
                    if stand_in.down:
                        return self._send(503, {"error": "backend down"})
                    body = {stand_in.key.kid: stand_in.key.pem()}
                    return self._send(200, body, {"Cache-Control": "public, max-age=3600"})
                if url.path == "/tokeninfo":
                    query = urllib.parse.parse_qs(url.query)
                    return self._tokeninfo(query.get("access_token", [""])[0])
                self._send(404, {"error": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                path = urllib.parse.urlsplit(self.path).path
                if path == "/token":
                    return self._token(form.get("assertion", [""])[0])
                if path != "/tokeninfo":
                    return self._send(404, {"error": "not found"})
                self._tokeninfo(form.get("access_token", [""])[0])

            def _token(self, assertion: str):
                """A service account's signed assertion exchanged for an ID token."""
                from google.auth import jwt

                stand_in._count("token")
                claims = jwt.decode(assertion, verify=False)
                if "target_audience" not in claims:
                    return self._send(400, {"error": "invalid_grant"})
                token = stand_in.id_token(claims["iss"], claims["target_audience"])
                self._send(200, {"id_token": token})

            def _tokeninfo(self, token: str):
                stand_in._count("tokeninfo")
                if stand_in.down:
                    return self._send(503, {"error": "backend down"})
                claims = stand_in.access.get(token)
                if claims is None or claims["exp"] <= time.time():
                    return self._send(400, {"error": "invalid_token"})
                left = int(claims["exp"] - time.time())
                self._send(200, {**claims, "exp": str(claims["exp"]), "expires_in": str(left)})

            def _send(self, status: int, body: dict, headers: dict | None = None):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _count(self, endpoint: str) -> None:
        with self._lock:
            self.calls[endpoint] += 1

    def access_token(self, email: str | None, *, seconds: int = 3600, **claims) -> str:
        """A new opaque access token for `email`, valid `seconds`."""
        token = f"ya29.stand-in-{len(self.access)}-{time.time_ns()}"
        scope = "https://www.googleapis.com/auth/cloud-platform openid email"
        values = {"azp": "client", "aud": "client", "scope": scope, **claims}
        if email is not None:
            values.setdefault("email", email)
            values.setdefault("email_verified", "true")
        self.access[token] = {**values, "exp": int(time.time()) + seconds}
        return token

    def id_token(self, email: str, audience: str, *, key: Key | None = None, **claims) -> str:
        """An ID token for `email` and `audience`, signed by the published key unless `key`."""
        now = int(time.time())
        values = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "sub": "1234",
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
            **claims,
        }
        return (key or self.key).sign(values)

    def service_account_file(self, folder, email: str):
        """A service-account key file for `email` whose token endpoint is this stand-in."""
        key = Key("sa-key")
        pem = key.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": "my-project",
            "private_key_id": key.kid,
            "private_key": pem,
            "client_email": email,
            "client_id": "1",
            "token_uri": f"{self.url}/token",
        }
        path = folder / "service-account.json"
        path.write_text(json.dumps(info))
        return path

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
