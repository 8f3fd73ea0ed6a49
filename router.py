"""The router: which handler answers a method and a path, or why none does.

A route is a method and a path pattern; `{name}` matches one path segment and `{name:int}`
a positive whole number, handed to the handler as `request.path_params`:

    router.add("GET", "/v1/items/{id:int}", get_item, name="get_item")
    router.match("GET", "/v1/items/7")     ->  (the route, {"id": 7})
    router.match("GET", "/v1/items/x")     ->  NotFound (404): no route has that path
    router.match("PUT", "/v1/items/7")     ->  MethodNotAllowed (405), Allow: GET, HEAD, ...
    router.match("BREW", "/v1/items/7")    ->  MethodNotImplemented (501), whatever the path

Patterns are compiled once, when the route is added, never per request. The table of the
shop's routes is routes.py; this module knows nothing of the shop.
"""

import re

from web import MethodNotAllowed, MethodNotImplemented, NotFound

# RFC 9110 §9.1: the methods this toolkit implements. Any other is a 501 for every path;
# a known method that a resource does not allow is a 405 with Allow.
IMPLEMENTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Route:
    """One method + path pattern, its handler and what the rest of the app needs to know."""

    __slots__ = ("method", "pattern", "handler", "name", "access", "rate_limit", "summary", "regex", "converters")

    def __init__(self, method, pattern, handler, *, name, access="public", rate_limit=None, summary=""):
        self.method = method
        self.pattern = pattern
        self.handler = handler
        self.name = name
        self.access = access  # "public", "user", "admin" or "metrics": read by the auth middleware
        self.rate_limit = rate_limit  # a class of the rate-limit middleware, or None: not limited
        self.summary = summary
        self.regex, self.converters = compile_pattern(pattern)


# {name} matches one path segment; {name:int} a positive whole number small enough for BIGINT.
_CONVERTERS = {"str": (r"[^/]+", str), "int": (r"[0-9]{1,18}", int)}
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)(?::([a-z]+))?\}")


def compile_pattern(pattern):
    """Compile a route pattern once into a regex and the converters of its parameters.

    The regex is used with `fullmatch`: `$` would also match before a final newline, and
    "/v1/items/7\\n" would be item 7.

    >>> regex, converters = compile_pattern("/v1/items/{id:int}")
    >>> regex.pattern, converters
    ('/v1/items/(?P<id>[0-9]{1,18})', {'id': <class 'int'>})
    """
    parts, converters, position = [], {}, 0
    for placeholder in _PLACEHOLDER.finditer(pattern):
        name, kind = placeholder.group(1), placeholder.group(2) or "str"
        regex, converter = _CONVERTERS[kind]
        parts.append(re.escape(pattern[position:placeholder.start()]))
        parts.append(f"(?P<{name}>{regex})")
        converters[name] = converter
        position = placeholder.end()
    parts.append(re.escape(pattern[position:]))
    return re.compile("".join(parts)), converters


def path_parameters(pattern):
    """The parameters of a pattern, in order, as (name, kind), kind "int" or "str".

    >>> path_parameters("/v1/orders/{id:int}/cancel"), path_template("/v1/orders/{id:int}/cancel")
    ([('id', 'int')], '/v1/orders/{id}/cancel')
    """
    return [(found.group(1), found.group(2) or "str") for found in _PLACEHOLDER.finditer(pattern)]


def path_template(pattern):
    """The pattern as an RFC 6570 / OpenAPI path template: the converters left out."""
    return _PLACEHOLDER.sub(r"{\1}", pattern)


class Router:
    """Find the route for a method and path: 404 for an unknown path, 405 for a method the
    path does not allow, 501 for a method outside IMPLEMENTED_METHODS (whatever the path).

    Paths without parameters are found in a dict; the others by trying each compiled regex.
    HEAD is answered by the GET handler (the body is dropped later), and OPTIONS by the
    router itself with the `Allow` header.
    """

    def __init__(self):
        self.routes = []
        self._static = {}   # path -> {method: route}
        self._dynamic = []  # (regex, converters, {method: route})

    def add(self, method, pattern, handler, **meta):
        if method not in IMPLEMENTED_METHODS:  # its requests would get a 501, never the handler
            raise ValueError(f"{method} is not one of IMPLEMENTED_METHODS")
        route = Route(method, pattern, handler, **meta)
        self.routes.append(route)
        if route.converters:
            for regex, _, methods in self._dynamic:
                if regex.pattern == route.regex.pattern:
                    methods[method] = route
                    break
            else:
                self._dynamic.append((route.regex, route.converters, {method: route}))
        else:
            self._static.setdefault(pattern, {})[method] = route
        return route

    def match(self, method, path):
        """Return (route, path_params); raise MethodNotImplemented, NotFound or MethodNotAllowed."""
        if method not in IMPLEMENTED_METHODS:
            raise MethodNotImplemented(f"{method} is not a method this server implements")
        methods, params = self._methods_for(path)
        if methods is None:
            raise NotFound(f"no resource at {path}")
        route = methods.get(method)
        if route is None and method == "HEAD":
            route = methods.get("GET")
        if route is None:
            raise MethodNotAllowed(self._allow(methods))
        return route, params

    def allowed(self, path):
        """The Allow list for a path, or None when the path is unknown."""
        methods, _ = self._methods_for(path)
        return None if methods is None else self._allow(methods)

    def _methods_for(self, path):
        methods = self._static.get(path)
        if methods is not None:
            return methods, {}
        for regex, converters, methods in self._dynamic:
            found = regex.fullmatch(path)
            if found:
                return methods, {name: converters[name](value) for name, value in found.groupdict().items()}
        return None, None

    @staticmethod
    def _allow(methods):
        allowed = set(methods)
        if "GET" in allowed:
            allowed.add("HEAD")
        allowed.add("OPTIONS")
        return sorted(allowed)
