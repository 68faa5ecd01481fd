"""Who a Google credential names: access tokens asked of Google, ID tokens checked offline.

An OAuth2 access token is opaque: only Google's token information endpoint can say whose
it is and until when, so each token is asked once and the answer kept until it expires.
An ID token is a JWT signed by one of Google's published keys: it is checked here, with
google-auth's `jwt.decode`, against keys fetched once and kept as long as Google's
`Cache-Control` says. Concurrent requests with the same new token wait for one check.
The token itself is never logged, kept (only its SHA-256) or echoed in an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

from ..errors import AuthUnavailable, Unauthenticated

ISSUERS = ("accounts.google.com", "https://accounts.google.com")
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_KEPT = 10_000  # tokens remembered at most; the oldest go first
_REFUSAL_SECONDS = 30.0  # how long a token Google called invalid is refused without asking
_CERTS_SECONDS = 3600.0  # keys kept this long when Google's answer gives no max-age
_REFETCH_SECONDS = 60.0
_TIMEOUT = 5.0
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class _Pending:
    """A check under way: its waiters wake when it ends, and share its failure to reach
    Google (a refusal or an identity is cached instead)."""

    def __init__(self):
        self.done = threading.Event()
        self.failed: AuthUnavailable | None = None


@dataclasses.dataclass(frozen=True)
class Identity:
    """Whose a verified token is: a verified email, and how it was shown."""

    email: str
    kind: str  # "access token" or "ID token"


class Verifier:
    """Verifies Google access and ID tokens, remembering each answer until it expires."""

    def __init__(
        self,
        *,
        tokeninfo_url: str,
        certs_url: str,
        clock: Callable[[], float] = time.time,
    ):
        self.tokeninfo_url = tokeninfo_url
        self.certs_url = certs_url
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, Identity | Unauthenticated]] = {}
        self._pending: dict[str, _Pending] = {}
        self._certs: tuple[float, dict[str, str]] | None = None
        self._certs_fetched = 0.0
        self.calls = 0  # requests made to Google's endpoints, for GET / and the tests

    def identify(self, token: str, audiences: Sequence[str]) -> Identity:
        """Whose `token` is.

        Raises:
            Unauthenticated: the token is malformed, expired, forged, or for another audience.
            AuthUnavailable: Google's endpoint could not answer; nobody is let in meanwhile.
        """
        key = hashlib.sha256(token.encode()).hexdigest()
        if _JWT.match(token):
            key += "|" + ",".join(audiences)
        while True:
            with self._lock:
                known = self._known.get(key)
                if known is not None and known[0] > self._clock():
                    return _outcome(known[1])
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = _Pending()
                    break
            pending.done.wait(_TIMEOUT * 2)
            if pending.failed is not None:
                raise pending.failed  # Google could not answer the check this one waited for
        try:
            expires, outcome = self._verify(token, audiences)
            with self._lock:
                self._known[key] = (expires, outcome)
                while len(self._known) > _KEPT:
                    self._known.pop(next(iter(self._known)))
        except AuthUnavailable as exc:
            pending.failed = exc
            raise
        finally:
            with self._lock:
                self._pending.pop(key, None)
            pending.done.set()
        return _outcome(outcome)

    def _verify(
        self, token: str, audiences: Sequence[str]
    ) -> tuple[float, Identity | Unauthenticated]:
        if _JWT.match(token):
            return self._id_token(token, audiences)
        return self._access_token(token)

    def _access_token(self, token: str) -> tuple[float, Identity | Unauthenticated]:
        body = urllib.parse.urlencode({"access_token": token}).encode()
        status, answer = self._ask(self.tokeninfo_url, body)
        if status == 400:
            refused = Unauthenticated("the access token is invalid or expired")
            return self._clock() + _REFUSAL_SECONDS, refused
        if status != 200 or not isinstance(answer, dict):
            raise AuthUnavailable(
                f"Google's token information endpoint answered HTTP {status}; the access "
                "token could not be verified, try again"
            )
        try:
            expires = float(answer.get("exp") or self._clock() + float(answer["expires_in"]))
        except (KeyError, TypeError, ValueError):
            expires = self._clock()
        if expires <= self._clock():
            return self._clock() + _REFUSAL_SECONDS, Unauthenticated("the access token expired")
        if CLOUD_PLATFORM not in str(answer.get("scope", "")).split():
            # A token some other site got to sign its users in with (email scope alone)
            # must not open this function: Google's clients ask for cloud-platform.
            return expires, Unauthenticated(
                f"the access token lacks the {CLOUD_PLATFORM} scope that Google's clients "
                "request; ask for it (and userinfo.email) when getting the token"
            )
        return expires, _identity(answer, "access token")

    def _id_token(
        self, token: str, audiences: Sequence[str]
    ) -> tuple[float, Identity | Unauthenticated]:
        from google.auth import exceptions, jwt

        try:
            try:
                claims = jwt.decode(token, certs=self._keys(), audience=list(audiences))
            except ValueError as exc:
                if "certificate for key id" not in str(exc).lower():
                    raise
                # Signed with a key published since the keys were fetched, or forged.
                claims = jwt.decode(token, certs=self._keys(fresh=True), audience=list(audiences))
        except (ValueError, exceptions.GoogleAuthError) as exc:
            # google-auth names the claim that failed (audience, expiry, signature), never
            # the token itself.
            return self._clock() + 60, Unauthenticated(f"the ID token: {_reason(exc)}")
        if claims.get("iss") not in ISSUERS:
            return self._clock() + 60, Unauthenticated(
                f"the ID token was issued by {claims.get('iss')!r}; expected accounts.google.com"
            )
        return float(claims["exp"]), _identity(claims, "ID token")

    def _keys(self, *, fresh: bool = False) -> dict[str, str]:
        """Google's current signing certificates by key id, fetched when stale; `fresh`
        fetches again at most once a minute, so forged key ids cannot flood Google."""
        now = self._clock()
        with self._lock:
            cached, fetched = self._certs, self._certs_fetched
        if cached is not None and (
            (cached[0] > now and not fresh) or (fresh and now - fetched < _REFETCH_SECONDS)
        ):
            return cached[1]
        status, answer, max_age = self._get(self.certs_url)
        if status != 200 or not isinstance(answer, dict):
            raise AuthUnavailable(
                f"Google's token signing keys could not be fetched (HTTP {status}); the ID "
                "token could not be verified, try again"
            )
        with self._lock:
            self._certs, self._certs_fetched = (now + max_age, answer), now
        return answer

    def _ask(self, url: str, body: bytes) -> tuple[int, object]:
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        return self._send(request)[:2]

    def _get(self, url: str) -> tuple[int, object, float]:
        return self._send(urllib.request.Request(url))

    def _send(self, request: urllib.request.Request) -> tuple[int, object, float]:
        self.calls += 1
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                status, raw = response.status, response.read()
                headers = response.headers
        except urllib.error.HTTPError as exc:
            status, headers = exc.code, exc.headers
            try:
                raw = exc.read()
            except Exception:
                raw = b""
        except Exception as exc:  # unreachable, refused, cut short: never let anyone in
            raise AuthUnavailable(
                f"Google's token endpoint {urllib.parse.urlsplit(request.full_url).netloc} could "
                f"not be reached ({type(exc).__name__}); the credential could not be verified"
            ) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        found = re.search(r"max-age=(\d+)", headers.get("Cache-Control", "") if headers else "")
        return status, answer, float(found.group(1)) if found else _CERTS_SECONDS


def _identity(claims: dict, kind: str) -> Identity | Unauthenticated:
    email = claims.get("email")
    if not email:
        return Unauthenticated(
            f"the {kind} names no email; request it with the userinfo.email scope (an access "
            "token) or with the email claim (an ID token)"
        )
    if str(claims.get("email_verified", "")).lower() != "true":
        return Unauthenticated(f"the {kind}'s email {email} is not verified")
    return Identity(str(email).lower(), kind)


def _outcome(outcome: Identity | Unauthenticated) -> Identity:
    if isinstance(outcome, Unauthenticated):
        raise Unauthenticated(str(outcome))
    return outcome


def _reason(exc: BaseException) -> str:
    """google-auth's reason, lower-cased and short: it never carries the token."""
    text = str(exc).strip().rstrip(".")
    return (text[:1].lower() + text[1:])[:300] if text else type(exc).__name__
