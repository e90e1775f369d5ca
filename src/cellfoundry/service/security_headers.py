"""Security headers on every response of the app, so that what a stranger's file puts on a page
(cell-type labels, gene and dataset names) can never run as script in the web UI's origin,
where the API key lives, and no response is sniffed into another type or framed by another site.

- every response: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer``;
- the web UI's pages (HTML): ``UI_POLICY``, a Content-Security-Policy that allows script from
  the app's origin only (no inline script, no event-handler attributes, no other origin);
  ``'unsafe-eval'`` because Plotly's WebGL scatter (regl) compiles its draw calls with
  ``Function`` (plotly/plotly.js#5865), and inline styles, which React and Plotly set;
- every other response: ``API_POLICY``, nothing may load from it as a document;
- FastAPI's /docs and /redoc pages keep no policy (they load Swagger UI and ReDoc from a CDN
  and start them with an inline script).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UI_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
#: FastAPI's documentation pages (Swagger UI, ReDoc): no policy
DOC_PAGES = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
CSP = b"content-security-policy"


def headers_for(path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` of a response to ``path``, with the security headers it lacks added."""
    have = {k.lower() for k, _ in headers}
    out = list(headers) + [(k, v) for k, v in COMMON if k not in have]
    if CSP not in have and path not in DOC_PAGES:
        ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
        policy = UI_POLICY if ctype.startswith(b"text/html") else API_POLICY
        out.append((CSP, policy.encode()))
    return out


class SecurityHeadersMiddleware:
    """Pure ASGI: adds the security headers to every response that passes through it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": headers_for(path, list(message["headers"]))}
            await send(message)

        await self.app(scope, receive, send_with_headers)
