"""`python -m gptft.serve`: check the arguments and the checkpoint, build the LitServer, run it."""
from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

from ..cli_args import parse
from ..errors import ConfigError

USAGE = """usage: python -m gptft.serve ckpt=PATH [host=127.0.0.1] [port=8000] [api_key=null]
         [max_batch_size=16] [batch_timeout=0.01] [max_tokens=256] [timeout=120] [device=auto] [log_level=warning]
  ckpt            a gptft checkpoint, or a folder of python -m gptft.export format=hf: a classifier
                  (POST /predict) or an instruction model (POST /v1/chat/completions, OpenAI-compatible);
                  the page is at /
  host            127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface: set api_key)
  api_key         required by every endpoint but /health (or set GPTFT_SERVE_API_KEY)
  max_batch_size  classifier requests batched into one forward pass (1: no batching)
  batch_timeout   seconds a batch waits to fill
  max_tokens      the chat's default generation budget
  timeout         seconds a request may wait in the queue before a 504"""

DEFAULTS = {"ckpt": None, "host": "127.0.0.1", "port": 8000, "api_key": None, "max_batch_size": 16,
            "batch_timeout": 0.01, "max_tokens": 256, "timeout": 120.0, "device": "auto", "log_level": "warning"}
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServer.run binds
MAX_PAYLOAD = 4 * 1024 * 1024


def check_args(args) -> None:
    if not args.ckpt:
        raise ConfigError(f"give ckpt=PATH\n\n{USAGE}")
    if args.host not in HOSTS:
        raise ConfigError(f"host must be one of {', '.join(HOSTS)} (LitServe binds only these), got {args.host!r}")
    if not 1024 <= args.port <= 65535:
        raise ConfigError(f"port must be in 1024..65535, got {args.port}")
    if args.max_batch_size < 1 or args.batch_timeout < 0 or args.max_tokens < 1 or args.timeout <= 0:
        raise ConfigError("max_batch_size and max_tokens must be positive integers, batch_timeout >= 0 and "
                          f"timeout > 0; got {args.max_batch_size}, {args.max_tokens}, {args.batch_timeout}, "
                          f"{args.timeout}")
    if args.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {args.device!r}")
    if args.log_level not in ("critical", "error", "warning", "info", "debug"):
        raise ConfigError(f"log_level must be critical, error, warning, info or debug, got {args.log_level!r}")


def check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}); pick another port=") from None


def build(args, meta: dict, context_length: int):
    """The LitServer for this checkpoint."""
    import litserve as ls

    from . import errors
    from .front import Front
    from .model_info import describe

    ckpt = Path(args.ckpt)
    info = describe(ckpt, meta, context_length)
    if info["kind"] == "classifier":
        from .classify_api import ClassifyAPI

        api = ClassifyAPI(str(ckpt), max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    else:
        from .chat_api import ChatAPI, ChatSpec

        api = ChatAPI(str(ckpt), spec=ChatSpec(meta, context_length, args.max_tokens))
    info["batching"] = {"max_batch_size": api.max_batch_size, "batch_timeout": api.batch_timeout}
    page = (Path(__file__).with_name("page.html")).read_bytes()
    server = ls.LitServer(api, accelerator=args.device, devices=1, timeout=args.timeout,
                          max_payload_size=MAX_PAYLOAD, disable_openapi_url=True,
                          middlewares=[(Front, {"api_key": args.api_key, "page": page, "info": info})])
    errors.install(server.app)
    return server, info


def main(argv: list[str] | None = None) -> None:
    from .model_info import load_served

    args = parse(DEFAULTS, USAGE, argv, {"api_key": str})
    args.api_key = args.api_key or os.environ.get("GPTFT_SERVE_API_KEY") or None
    check_args(args)
    check_port(args.host, args.port)
    if args.host != "127.0.0.1" and not args.api_key:
        print(f"warning: serving on {args.host} (every interface) without api_key", file=sys.stderr, flush=True)
    # loaded here once to refuse a bad checkpoint or folder before any process starts; the worker loads its own copy
    task, _, meta = load_served(args.ckpt)
    context_length = task.backbone.context_length
    del task
    server, info = build(args, meta, context_length)
    shown = "[::1]" if args.host == "::" else args.host
    route = "POST /predict" if info["kind"] == "classifier" else "POST /v1/chat/completions"
    what = info["kind"] + (" (exported folder)" if info["source"] != "checkpoint" else "")
    print(f"gptft.serve: {what} {args.ckpt} at http://{shown}:{args.port}/ ({route}, GET /info, "
          f"GET /health{', API key required' if args.api_key else ''}); Ctrl+C stops", flush=True)
    # SIGTERM as Ctrl+C: LitServer then stops its worker processes too
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level=args.log_level)
