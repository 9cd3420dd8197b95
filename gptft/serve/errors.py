"""Every error the server answers is JSON in OpenAI's shape, {"error": {"message", "type", "param", "code"}},
so the `openai` client and the page show the message. The handlers are FastAPI's public exception hooks
on the app LitServe builds."""
from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


def error_body(message: str, code: str = "invalid_request", param: str | None = None) -> dict:
    kind = "invalid_request_error" if code != "internal_error" else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _where(loc) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else "body"


def describe_validation(errors) -> tuple[str, str | None]:
    """(one message naming every problem, the first field named)."""
    messages, first = [], None
    for err in errors:
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            messages.append(f"malformed JSON: {detail}".rstrip(": "))
            continue
        where = _where(err.get("loc", ()))
        first = first or (where if where != "body" else None)
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        messages.append(f"{where}: {msg}")
    return "; ".join(messages) or "invalid request", first


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = describe_validation(exc.errors())
    kind = request.headers.get("content-type", "")
    if kind and "json" not in kind:  # FastAPI then does not parse the body at all
        message = f"the body must be JSON sent as 'Content-Type: application/json', not {kind!r} ({message})"
    return JSONResponse(error_body(message, param=param), status_code=400)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    code = "internal_error" if exc.status_code >= 500 else {401: "invalid_api_key", 404: "not_found",
                                                          405: "method_not_allowed", 413: "too_large"}.get(
        exc.status_code, "invalid_request")
    return JSONResponse(error_body(detail, code), status_code=exc.status_code, headers=getattr(exc, "headers", None))


def install(app) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
