"""Who may call the function when it checks credentials itself (`CPR_AUTH=google`).

Under `CPR_AUTH=iam` (the default) Cloud Run's IAM layer admits only callers holding the
invoker role, and the function trusts it. Under `google` the function is open at that
layer and admits a request only with `Authorization: Bearer TOKEN`, a Google access or
ID token (`tokens`), whose verified email is on `CPR_ALLOWED_PRINCIPALS`. A health check
(`GET /health`, the route; the app decides) needs no credential.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import PermissionDenied, Unauthenticated
from .tokens import Verifier


class Gate:
    """Admits a request whose Google credential names an allowed principal."""

    def __init__(self, allowed: Sequence[str], verifier: Verifier, audiences: Sequence[str]):
        self.emails = {p.split(":", 1)[1] for p in allowed if not p.startswith("domain:")}
        self.domains = {p.split(":", 1)[1] for p in allowed if p.startswith("domain:")}
        self.verifier = verifier
        self.audiences = tuple(audiences)

    def admit(self, authorization: str | None, urls: Sequence[str]) -> str:
        """The caller's email.

        Args:
            authorization: the request's `Authorization` header.
            urls: the URLs the function is called at (see `App`): the audiences an ID
                token may name when `CPR_AUTH_AUDIENCES` is unset.

        Raises:
            Unauthenticated: no credential, or one that does not verify (401).
            PermissionDenied: a verified principal not on the allow list (403).
            AuthUnavailable: Google's endpoint could not answer (503).
        """
        if not authorization:
            raise Unauthenticated(
                "this function requires a Google credential: send Authorization: Bearer "
                "with an OAuth2 access token or an ID token"
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthenticated(
                "the Authorization header must be 'Bearer TOKEN' with a Google access or ID "
                f"token; got a {scheme[:20]!r} credential"
            )
        identity = self.verifier.identify(token, self.audiences or tuple(urls))
        if identity.email in self.emails or identity.email.rpartition("@")[2] in self.domains:
            return identity.email
        raise PermissionDenied(
            f"{identity.email} ({identity.kind}) is not allowed to call this function; "
            "add it to CPR_ALLOWED_PRINCIPALS"
        )
