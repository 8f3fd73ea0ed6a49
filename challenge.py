"""The 401 challenge: which credentials to send, and why the ones sent were refused.

A 401 must say how to authenticate, in WWW-Authenticate (RFC 9110 §11.6.1, §15.5.2). The
shop's scheme is Bearer (RFC 6750 §3): an access token in `Authorization: Bearer <token>`.
When credentials were sent and refused, the challenge also carries an RFC 6750 §3.1 error
code, so a client can tell "log in again" from "fix your request":

    HTTP/1.1 401 Unauthorized
    WWW-Authenticate: Bearer realm="shop", error="invalid_token"

    no error             no credentials were sent, an email and password did not match,
                         or a refresh token was unknown, spent or revoked
    invalid_request      the Authorization header is not "Bearer <token>"
    invalid_token        an access token, API key or session that is malformed, expired,
                         revoked or forged

Every 401 of the shop is made here: by middleware.authenticate, for the credentials of any
request, and by the handlers of api_auth.py, for a failed login or a refused refresh token.

    >>> unauthorized("the API key is not valid", "invalid_token").headers
    [('WWW-Authenticate', 'Bearer realm="shop", error="invalid_token"')]
"""

from web import Unauthorized

WWW_AUTHENTICATE = 'Bearer realm="shop"'


class CredentialsRefused(Unauthorized):
    """The 401 for credentials that were sent and refused (the ones with an error code):
    the rate limits count these per address (middleware.guard_credentials)."""


def unauthorized(detail, error_code=None):
    """A 401 (web.Unauthorized) with this detail and the Bearer challenge; `error_code`
    ("invalid_request" or "invalid_token") names why presented credentials were refused,
    and makes it a CredentialsRefused."""
    if error_code is None:
        return Unauthorized(detail, headers=[("WWW-Authenticate", WWW_AUTHENTICATE)])
    challenge = f'{WWW_AUTHENTICATE}, error="{error_code}"'
    return CredentialsRefused(detail, headers=[("WWW-Authenticate", challenge)])
