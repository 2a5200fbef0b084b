"""`edge-quamba serve` as a library call: open the model, build its backend once, bind, serve until a signal.

Stopping (SIGTERM, or Ctrl-C): the listening socket closes at once (new connections are refused), /health answers
503, queued requests get 503, and the running generation may go on for --shutdown-timeout seconds; then it is
cancelled and ends after its current token with finish_reason "length" (a stream still gets its last chunk and
``[DONE]``). uvicorn waits for open connections that long plus one second, then closes them; the worker thread
is joined and the process exits 0. Bound: --shutdown-timeout + 1 s + one model call (a prefill at most). A signal
that comes while the model is still loading exits 0 too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import signal
import socket
import threading
from typing import Callable

import uvicorn

from edge_quamba import __version__
from edge_quamba.errors import InputError
from edge_quamba.serve.app import ServedModel, Service, create_app
from edge_quamba.serve.schemas import Limits

logger = logging.getLogger("edge_quamba.serve")


def load_served_model(*, model: str | None, backend: str = "ref", tokenizer: str | None = None,
                      threads: int | None = None, served_model_name: str | None = None,
                      chat_template: str | None = None, limits: Limits = Limits()) -> ServedModel:
    """Resolve ``model`` and build everything a request needs (as ``run`` does: one opener, the backend factory)."""
    from edge_quamba.folders import load_model_tokenizer, open_model
    from edge_quamba.runtime.backends import check_backend, make_backend
    from edge_quamba.serve.chat import load_chat_template
    from edge_quamba.serve.engine import Engine

    folder = open_model(model, check=lambda opened: check_backend(backend, opened))
    tok = load_model_tokenizer(folder, tokenizer)
    template = load_chat_template(folder.path, chat_template)
    runner = make_backend(backend, folder, threads=threads)
    name = served_model_name or (model.rstrip("/") if model else "demo")
    return ServedModel(name=name, engine=Engine(runner, tok), template=template, backend=backend, limits=limits,
                       fingerprint=f"edge-quamba-{__version__}-{backend}")


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free port), or a one-line InputError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:  # socket.gaierror included
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's Server, which also starts our shutdown when its signal handler runs and announces the real URL."""

    def __init__(self, config: uvicorn.Config, service: Service, announce: Callable[[], None],
                 ignored: frozenset[int] = frozenset()):
        super().__init__(config)
        self.service, self.announce, self.loop, self.ignored = service, announce, None, ignored

    @contextlib.contextmanager
    def capture_signals(self):
        """uvicorn's handlers, except for the signals our parent told us to ignore (nohup, a background job)."""
        with super().capture_signals():
            for sig in self.ignored:
                signal.signal(sig, signal.SIG_IGN)
            yield

    async def startup(self, sockets=None):
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self.announce()

    def handle_exit(self, sig, frame):
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first and self.loop is not None:
            self.loop.call_soon_threadsafe(self.service.begin_shutdown)


class _Stopped(BaseException):
    """Raised by our SIGTERM/SIGINT handler; serve() returns on it (exit 0)."""


def _stop(signum, frame):
    raise _Stopped(signum)


def serve(*, model: str | None, backend: str = "ref", host: str = "127.0.0.1", port: int = 8000,
          tokenizer: str | None = None, threads: int | None = None, served_model_name: str | None = None,
          chat_template: str | None = None, limits: Limits = Limits(), access_log: bool = True,
          log_level: str = "info", announce: Callable[[str], None] = logger.warning) -> None:
    """Serve ``model`` until SIGTERM / SIGINT (see the module docstring); ``announce`` gets one line with the URL
    once the server accepts connections."""
    # uvicorn re-raises the signal it caught once it has shut down, to the handler it found: ours makes that a
    # normal return (exit 0) instead of the default action (death by signal). A signal while loading exits too.
    # A signal inherited as ignored (SIGINT of a background job `serve &`) stays ignored: neither handler replaces it.
    main = threading.current_thread() is threading.main_thread()
    ignored = frozenset(sig for sig in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(sig) == signal.SIG_IGN)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)
                if main and sig not in ignored}
    try:
        sock = bind(host, port)  # first: a taken port is refused before seconds of loading
        served = load_served_model(model=model, backend=backend, tokenizer=tokenizer, threads=threads,
                                   served_model_name=served_model_name, chat_template=chat_template, limits=limits)
        exposed = "" if ipaddress.ip_address(sock.getsockname()[0]).is_loopback else \
            "; NOT loopback: no authentication, anyone who reaches this address can use the model"
        app = create_app(served)
        config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on",
                                timeout_graceful_shutdown=math.ceil(limits.shutdown_timeout_s) + 1)
        server = _Server(config, app.state.service, lambda: announce(
            f"edge-quamba serve: {url_of(sock)}/v1 (model {served.name}, backend {backend}, chat template "
            f"{served.template.source}{exposed}); SIGTERM or Ctrl-C stops"), ignored)
        server.run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
