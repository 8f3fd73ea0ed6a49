"""The API describing itself: GET /openapi.json, and GET /docs, a page to read and try it.

    $ curl -si localhost:8000/openapi.json | head -4
    HTTP/1.1 200 OK
    Content-Type: application/json
    ETag: "3b0c..."
    Cache-Control: no-cache

The document is openapi.py's, built from the route table on its first request. The page is
ours, three small files in static/ (no CDN, no framework): docs.html loads docs.css and
docs.js from this server, and the script fetches /openapi.json and draws the operations,
grouped by tag, each with its parameters, its schemas and a "try it" form.

The page keeps a strict Content-Security-Policy of its own: everything the API sends says
`default-src 'none'` (middleware.security_headers), which would block the page's own script
and style too. Its policy allows exactly what it loads, from this origin only, and nothing
inline, so an injected <script> or onclick= would still not run:

    default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; ...
"""

from pathlib import Path

from schemas import describe
from web import Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
DOCS_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self';"
               " base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The three files are read once, at import: they change only with a release.
DOCS_FILES = {
    name: (STATIC_DIR / name).read_bytes() for name in ("docs.html", "docs.js", "docs.css")
}
TEXT = {"type": "string"}


@describe(response={"type": "object", "description": "an OpenAPI 3.1 document"}, response_headers=("ETag",))
def openapi_document(request):
    """GET /openapi.json: this API as an OpenAPI 3.1 document (304 for If-None-Match)."""
    return request.services.api_document.response(request)


@describe(response=TEXT, media_type="text/html")
def docs_page(request):
    """GET /docs: the operations grouped by tag, their schemas, and a form to try each."""
    return _static(request, "docs.html", "text/html; charset=utf-8")


@describe(response=TEXT, media_type="text/javascript")
def docs_script(request):
    """GET /docs.js: the script of the docs page."""
    return _static(request, "docs.js", "text/javascript; charset=utf-8")


@describe(response=TEXT, media_type="text/css")
def docs_style(request):
    """GET /docs.css: the style of the docs page."""
    return _static(request, "docs.css", "text/css; charset=utf-8")


def _static(request, name, content_type):
    headers = [("Content-Type", content_type), ("Content-Security-Policy", DOCS_POLICY),
               ("Cache-Control", "no-cache")]
    return Response(DOCS_FILES[name], 200, headers)
