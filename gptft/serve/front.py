"""The ASGI middleware in front of LitServe's app (LitServer's `middlewares=`): the API key check for every
path but /health, and the two routes LitServe itself answers differently: GET / (LitServe: a plain
"litserve running"; here the web page) and GET /info (here the checkpoint's description)."""
from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs

from .errors import error_body

OPEN_PATHS = ("/health",)


class Front:
    def __init__(self, app, *, api_key: str | None, page: bytes, info: dict):
        self.app, self.api_key, self.page = app, api_key, page
        self.info = json.dumps(info).encode()

    def _key_ok(self, scope) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if given is None and scope["path"] == "/":  # a browser cannot send a header when it opens the page
            given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key") or [None])[0]
        return given is not None and hmac.compare_digest(given.encode(), self.api_key.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if self.api_key and path not in OPEN_PATHS and not self._key_ok(scope):
            body = error_body("missing or wrong API key: send 'Authorization: Bearer KEY' (or 'X-API-Key: KEY'; "
                              "the page: /?api_key=KEY)", "invalid_api_key")
            return await _send(send, 401, json.dumps(body).encode(), "application/json")
        if method == "GET" and path == "/":
            return await _send(send, 200, self.page, "text/html; charset=utf-8")
        if method == "GET" and path == "/info":
            return await _send(send, 200, self.info, "application/json")
        await self.app(scope, receive, send)


async def _send(send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
