"""The API describing itself: GET /openapi.json, and GET /docs, a page to read and try it.

    $ curl -si localhost:8000/openapi.json | head -4
    HTTP/1.1 200 OK
    Content-Type: application/json
    ETag: "3b0c..."
    Cache-Control: no-cache

The document is openapi.py's, built from the route table on its first request. The page is
ours, four small files in static/docs/ (no CDN, no framework): index.html loads the style,
the script and the icon from /docs/<file> on this server, and the script fetches
/openapi.json and draws the operations, grouped by tag, each with its parameters, its
schemas and a "try it" form.

The page keeps a strict Content-Security-Policy of its own: everything the API sends says
`default-src 'none'` (middleware.security_headers), which would block the page's own script
and style too. Its policy allows exactly what it loads, from this origin only, and nothing
inline, so an injected <script> or onclick= would still not run:

    default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; ...
"""

from pathlib import Path

from schemas import describe
from web import NotFound, Response

DOCS_DIR = Path(__file__).resolve().parent / "static" / "docs"
DOCS_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self';"
               " base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The files, read once at import (they change only with a release), by name: a request
# can name only one of these, never a path on the disk.
DOCS_FILES = {path.name: path.read_bytes() for path in sorted(DOCS_DIR.iterdir()) if path.suffix in CONTENT_TYPES}


@describe(response={"type": "object", "description": "an OpenAPI 3.1 document"}, response_headers=("ETag",))
def openapi_document(request):
    """GET /openapi.json: this API as an OpenAPI 3.1 document (304 for If-None-Match)."""
    return request.services.api_document.response(request)


@describe(response={"type": "string"}, media_type="text/html")
def docs_page(request):
    """GET /docs: the operations grouped by tag, their schemas, and a form to try each."""
    return _docs_file("index.html")


@describe(response={"type": "string"}, media_type=("text/javascript", "text/css", "image/svg+xml"), errors=(404,))
def docs_file(request):
    """GET /docs/{file}: the page's script, style and icon (script.js, style.css, icon.svg)."""
    name = request.path_params["file"]
    if name not in DOCS_FILES or name == "index.html":
        raise NotFound(f"no file {name} in the docs")
    return _docs_file(name)


def _docs_file(name):
    content_type = CONTENT_TYPES[Path(name).suffix]
    headers = [("Content-Type", content_type), ("Content-Security-Policy", DOCS_POLICY), ("Cache-Control", "no-cache")]
    return Response(DOCS_FILES[name], 200, headers)
