"""Failures of the Hugging Face hub as one line, and whether the hub can be reached at all.

A hub id (``--model owner/name``, ``--tokenizer owner/name``) and lm-eval's task data go through huggingface_hub,
which raises its own errors, its HTTP client's (httpx in huggingface_hub 1.x, httpx2 in 2.x; requests in older
versions) and plain OSErrors, each with a long chained traceback. :data:`NETWORK_ERRORS` is that family and
:func:`describe` its one-line form; a proxy that cannot be used (unreachable, a malformed URL, SOCKS without the
socksio package) is named with the variable that set it.

:func:`hub_reachable` opens one TCP connection (to the proxy when one is set, else to the hub's host) with a short
timeout; the lm-eval entry point uses it to go offline at once instead of letting ``datasets`` retry for half a
minute (:func:`go_offline`).
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import urllib.request
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def _network_errors() -> tuple[type[BaseException], ...]:
    """ConnectionError and TimeoutError, every exception class huggingface_hub defines, and the HTTP clients' error
    bases (those installed)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, names in (("huggingface_hub.errors", None),
                               ("httpx", ("HTTPError", "InvalidURL", "StreamError", "CookieConflict")),
                               ("httpx2", ("HTTPError", "InvalidURL", "StreamError", "CookieConflict")),
                               ("requests", ("RequestException",))):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        values = vars(module).values() if names is None else (getattr(module, n, None) for n in names)
        found += [v for v in values if isinstance(v, type) and issubclass(v, Exception) and v.__module__.startswith(
            module_name.split(".")[0])]
    return tuple(found)


NETWORK_ERRORS = _network_errors()
"""What a hub download or an HTTP client raises when the hub, a proxy or the network fails."""
DOWNLOAD_ERRORS = NETWORK_ERRORS + (OSError, ValueError, ImportError)
"""What a hub download may raise for a reason outside this program: the above, a cache folder that cannot be
written, a malformed proxy URL or repository id (ValueError), SOCKS support not installed (ImportError)."""


def offline_requested() -> bool:
    """Whether the environment asks for offline mode (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_VARIABLES)


def proxy_setting() -> str | None:
    """'HTTPS_PROXY=http://...' for the first proxy variable set, else None."""
    for name in PROXY_VARIABLES:
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    return None


def describe(exc: BaseException) -> str:
    """One line for a hub failure: the exception's type and the first line of its message (at most 200 chars), and
    the proxy variable when one is set."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
    proxy = proxy_setting()
    return f"{text} (with {proxy})" if proxy else text


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub (HF_ENDPOINT, default huggingface.co:443), or to the proxy the
    environment sets for it, opens within ``timeout`` seconds."""
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    try:
        host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
        proxy = None if urllib.request.proxy_bypass_environment(host or "") else \
            urllib.request.getproxies_environment().get(endpoint.scheme)
        if proxy:
            parsed = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
        if not host:
            return False
        socket.create_connection((host, port), timeout=timeout).close()
    except (OSError, ValueError):  # refused, unresolvable, timed out; a malformed endpoint or proxy URL
        return False
    return True


def go_offline() -> None:
    """Offline mode for huggingface_hub and datasets in this process: the environment variables for what is imported
    later, and the constants both libraries read them into at import for what is imported already."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    if "huggingface_hub.constants" in sys.modules:
        sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True
    if "datasets.config" in sys.modules:
        config = sys.modules["datasets.config"]
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True
