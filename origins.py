"""Web origins as browsers send them (RFC 6454): the check behind CORS_ORIGINS (config.py).

An origin is a scheme, a host and a port, and nothing else: `https://shop.example`,
`http://localhost:5173`. A browser sends it in the Origin header in one exact spelling, and
the CORS middleware compares origins as strings, so an allowed origin written any other way
(a capital, a trailing slash, the default port) would silently match nothing.
"""

import re

# An origin as a browser sends it in the Origin header (RFC 6454 §6.2 and §7): scheme, host and a
# port only when it is not the scheme's default, all lowercase, nothing after. A host is a
# name (internationalised names arrive as xn-- punycode) or an IPv6 literal in brackets.
ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[1-9][0-9]{0,4}))?")
DEFAULT_PORTS = {"http": "80", "https": "443"}


def parse_origins(text):
    """CORS_ORIGINS (comma-separated) as a tuple of exact origins, in the order given, each once.

    Raises ValueError naming the first origin refused, with the reason: `null` (the origin
    of sandboxed frames, local files and some redirects, which any page can arrange to send:
    allowing it allows everyone), `*` or any wildcard (never together with credentials, and a
    pattern is a classic way to allow `https://shop.example.attacker.net`), and anything a
    browser would never send as an Origin, which would silently match nothing: a path or
    trailing slash, capitals, a default port.

    >>> parse_origins("https://shop.example, http://localhost:5173,https://shop.example")
    ('https://shop.example', 'http://localhost:5173')
    """
    origins = []
    for origin in (part.strip() for part in text.split(",")):
        if origin:
            problem = origin_problem(origin)
            if problem is not None:
                raise ValueError(f"{origin!r} {problem}")
            origins.append(origin)
    return tuple(dict.fromkeys(origins))


def origin_problem(origin):
    """Why `origin` cannot be in CORS_ORIGINS, or None when it is an exact origin.

    >>> origin_problem("http://localhost:5173") is None
    True
    >>> origin_problem("https://shop.example:443")
    'names the default port: browsers send it without :443'
    """
    if origin == "null":
        return "is never allowed: sandboxed frames and local files send Origin: null, and any page can be one"
    if "*" in origin:
        return "is a wildcard: list each origin exactly (credentials are never allowed with *)"
    match = ORIGIN.fullmatch(origin)
    if match is None:
        return ("is not an origin as browsers send it: scheme://host[:port] (http or https), lowercase,"
                " with no path, not even a trailing /")
    port = match["port"]
    if port is not None and port == DEFAULT_PORTS[match["scheme"]]:
        return f"names the default port: browsers send it without :{port}"
    if port is not None and not 1 <= int(port) <= 65535:
        return "has a port outside 1-65535"
    return None
