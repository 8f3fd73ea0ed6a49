"""GET /docs, /docs.js and /docs.css: our own page, under a strict policy of its own.

What a browser makes of the page is tests/test_docs_browser.py; here, what the server sends:
the page's Content-Security-Policy in place of the API's (never both: two policies would
both apply), no inline script, style or event handler for that policy to refuse, and
nothing loaded from another origin. In process and over a socket (`client`).
"""

from html.parser import HTMLParser

import pytest

import api_docs

API_POLICY = "default-src 'none'; frame-ancestors 'none'"


@pytest.fixture
def engine():
    return "sqlite"  # the pages read no database


@pytest.mark.parametrize(("path", "content_type"), [
    ("/docs", "text/html; charset=utf-8"),
    ("/docs/script.js", "text/javascript; charset=utf-8"),
    ("/docs/style.css", "text/css; charset=utf-8"),
    ("/docs/icon.svg", "image/svg+xml"),
])
def test_the_page_and_its_files_carry_the_page_policy_only(client, path, content_type):
    response = client.get(path)
    assert response.status == 200
    assert response.header("Content-Type") == content_type
    policies = [value for name, value in response.headers if name.lower() == "content-security-policy"]
    assert policies == [api_docs.DOCS_POLICY]
    assert "'unsafe-inline'" not in api_docs.DOCS_POLICY and "http" not in api_docs.DOCS_POLICY
    assert response.header("X-Content-Type-Options") == "nosniff"  # the other security headers stay
    assert response.header("X-Frame-Options") == "DENY"


@pytest.mark.parametrize("name", ["index.html", "nothing.js", "..", "%2e%2e%2fserver.py", "README.md"])
def test_only_the_page_s_own_files_are_served(client, name):
    response = client.get(f"/docs/{name}")
    assert response.status == 404
    assert response.header("Content-Type") == "application/problem+json"


def test_every_other_answer_keeps_the_api_policy(client):
    for path in ("/health", "/openapi.json", "/v1/nothing-here"):
        response = client.get(path)
        policies = [value for name, value in response.headers if name.lower() == "content-security-policy"]
        assert policies == [API_POLICY], path


def test_the_page_has_nothing_inline_and_loads_only_from_this_origin(client):
    page = PageParts()
    page.feed(client.get("/docs").body.decode())
    assert page.scripts == ["/docs/script.js"] and page.styles == ["/docs/style.css"]
    assert page.inline == [], "inline code would be refused by the page's own policy"


class PageParts(HTMLParser):
    """The scripts and style sheets a page loads, and anything inline the CSP would block."""

    def __init__(self):
        super().__init__()
        self.scripts, self.styles, self.inline = [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attributes):
        attributes = dict(attributes)
        self.inline.extend(f"{tag} {name}=" for name in attributes if name.startswith("on") or name == "style")
        if tag == "script":
            self.scripts.append(attributes.get("src"))
            self._in_script = True
        if tag == "style":
            self.inline.append("<style>")
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.styles.append(attributes["href"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append("<script> with a body")
