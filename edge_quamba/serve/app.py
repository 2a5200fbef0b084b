"""The HTTP routes (Starlette):

    POST /v1/completions, /v1/chat/completions   generate (streamed as server-sent events with "stream": true)
    GET  /v1/models, /v1/models/{id}             the one model this server runs
    GET  /health                                 200 {"status": "ok", ...}; 503 once shutting down
    GET  /metrics                                Prometheus text format (edge_quamba.serve.metrics)

Every error is an OpenAI error object (edge_quamba.serve.errors): 400 for a body that is not JSON or a field that is
wrong, 404 for an unknown model or route, 405 for a wrong method, 413 for a body over --max-body-bytes, 429 with
Retry-After when the queue is full, 503 while shutting down or after --request-timeout in the queue, 500 only for
the server's or the model's own failure (its traceback goes to the log, never to the client).

A client that disconnects cancels its request: a queued one leaves the queue, a running one stops after its current
token and frees the slot (edge_quamba.serve.scheduler). Such a request is counted with status 499.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edge_quamba.errors import EdgeQuambaError
from edge_quamba.serve.chat import ChatTemplate
from edge_quamba.serve.engine import Engine, Outcome
from edge_quamba.serve.errors import APIError, server_error
from edge_quamba.serve.metrics import Metrics, RequestCounter
from edge_quamba.serve.responses import DONE, ChatFormat, CompletionFormat, sse
from edge_quamba.serve.scheduler import Failed, Finished, Job, Piece, Rejected, Scheduler
from edge_quamba.serve.schemas import ChatRequest, CompletionRequest, Limits, chat_request, completion_request, parse

logger = logging.getLogger("edge_quamba.serve")
ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics")
CLIENT_GONE = 499


@dataclass
class ServedModel:
    """What the app serves: its public name, the engine (backend + tokenizer), the chat template, the backend's
    name and the limits."""

    name: str
    engine: Engine
    template: ChatTemplate
    backend: str
    limits: Limits
    fingerprint: str = ""


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class Service:
    """What the routes share: the served model, the scheduler (made when the loop starts) and the metrics."""

    def __init__(self, model: ServedModel):
        self.model = model
        self.scheduler = Scheduler(model.engine, model.limits.max_queue)
        self.metrics = Metrics(ROUTES, waiting=lambda: self.scheduler.waiting,
                               active=lambda: int(self.scheduler.active is not None))

    def begin_shutdown(self) -> None:
        """SIGTERM: refuse new work, drop the queue, give the running generation --shutdown-timeout seconds."""
        self.scheduler.close(self.model.limits.shutdown_timeout_s)

    def observe(self, job: Job, outcome: Outcome) -> None:
        self.metrics.ttft.observe(outcome.first_token_at - job.created)
        if outcome.tpot_s is not None:
            self.metrics.tpot.observe(outcome.tpot_s)
        self.metrics.prompt_tokens.inc(outcome.prompt_tokens)
        self.metrics.generation_tokens.inc(outcome.completion_tokens)


def api_error(error: BaseException) -> APIError:
    """A job's failure as the answer: refusals keep their status, the model's one-line errors are 500s, anything
    else is a bug (logged with its traceback, answered without it)."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, Rejected):
        kind = "rate_limit_error" if error.status == 429 else "server_error"
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
        return APIError(error.status, error.message, type=kind, code=error.code, headers=headers)
    if isinstance(error, EdgeQuambaError):
        return server_error(f"the model failed: {error}")
    logger.error("generation failed", exc_info=error)
    return server_error(f"internal error ({type(error).__name__}); see the server log")


async def read_json(request: Request, max_bytes: int) -> object:
    """The body as JSON, refused with 413 past ``max_bytes`` (before reading it, when Content-Length says so)."""
    too_big = APIError(413, f"the request body is larger than {max_bytes} bytes (--max-body-bytes)",
                       code="body_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_big
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise too_big
    except ClientDisconnect:
        raise ClientGone from None

    def constant(name: str):
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(bytes(body), parse_constant=constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise APIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, job: Job, awaitable):
    """Await ``awaitable`` unless the client disconnects first: then cancel the job and raise ClientGone. If this
    handler is cancelled (server shutdown), the job is cancelled too."""
    waiter = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not waiter.done():
            job.cancel()
        for task in (waiter, watcher):
            task.cancel()
    if not waiter.done() or waiter.cancelled():
        raise ClientGone
    return waiter.result()


async def _outcome(job: Job) -> Outcome:
    while True:
        event = await job.events.get()
        if isinstance(event, Finished):
            return event.outcome
        if isinstance(event, Failed):
            raise api_error(event.error)


async def _stream(service: Service, job: Job, fmt, include_usage: bool, endpoint: str):
    """The server-sent events of one streamed answer (edge_quamba.serve.responses)."""
    try:
        for chunk in fmt.opening():
            yield sse(chunk)
        while True:
            event = await job.events.get()
            if isinstance(event, Piece):
                yield sse(fmt.piece(event.text))
            elif isinstance(event, Finished):
                service.observe(job, event.outcome)
                yield sse(fmt.closing(event.outcome.finish_reason))
                if include_usage:
                    yield sse(fmt.usage_chunk(event.outcome))
                yield DONE
                return
            elif isinstance(event, Failed):
                error = api_error(event.error)
                service.metrics.errors.labels(endpoint, error.type).inc()
                yield sse(error.body())
                return
    except asyncio.CancelledError:  # the client went away mid-stream
        service.metrics.errors.labels(endpoint, "cancelled").inc()
        raise
    finally:
        job.cancel()


async def _generate(request: Request, parsed, generation, fmt_type) -> Response:
    """Queue one generation and answer it, streamed or whole."""
    service: Service = request.app.state.service
    model = service.model
    if parsed.model != model.name:
        raise APIError(404, f"the model '{parsed.model}' does not exist; this server runs '{model.name}' "
                       f"(GET /v1/models)", param="model", code="model_not_found")
    try:
        job = service.scheduler.submit(generation, model.limits.request_timeout_s)
    except Rejected as exc:
        raise api_error(exc) from None
    fmt = fmt_type(model.name, model.fingerprint)
    event = await until_disconnect(request, job, job.events.get())  # Started, or Failed while queued
    if isinstance(event, Failed):
        raise api_error(event.error)
    if generation.stream:
        async def cancel() -> None:  # runs after the stream, also when Starlette saw the client leave first
            job.cancel()

        body = _stream(service, job, fmt, generation.include_usage, request.url.path)
        return StreamingResponse(body, media_type="text/event-stream", background=BackgroundTask(cancel),
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    outcome = await until_disconnect(request, job, _outcome(job))
    service.observe(job, outcome)
    return JSONResponse(fmt.full(outcome))


async def completions(request: Request) -> Response:
    model: ServedModel = request.app.state.service.model
    parsed = parse(CompletionRequest, await read_json(request, model.limits.max_body_bytes))
    generation = completion_request(parsed, model.engine.tokenizer, model.limits)
    return await _generate(request, parsed, generation, CompletionFormat)


async def chat_completions(request: Request) -> Response:
    model: ServedModel = request.app.state.service.model
    parsed = parse(ChatRequest, await read_json(request, model.limits.max_body_bytes))
    generation = chat_request(parsed, model.engine.tokenizer, model.template, model.limits)
    return await _generate(request, parsed, generation, ChatFormat)


def _model_card(service: Service) -> dict:
    return {"id": service.model.name, "object": "model", "created": 0, "owned_by": "edge-quamba",
            "backend": service.model.backend}


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [_model_card(request.app.state.service)]})


async def get_model(request: Request) -> Response:
    service: Service = request.app.state.service
    if request.path_params["model"] != service.model.name:
        raise APIError(404, f"the model '{request.path_params['model']}' does not exist", param="model",
                       code="model_not_found")
    return JSONResponse(_model_card(service))


async def health(request: Request) -> Response:
    service: Service = request.app.state.service
    scheduler = service.scheduler
    status = "shutting_down" if scheduler.closing else "ok"
    return JSONResponse({"status": status, "model": service.model.name, "backend": service.model.backend,
                         "active": int(scheduler.active is not None), "queued": scheduler.waiting},
                        status_code=503 if scheduler.closing else 200)


async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.service.metrics.render()
    return Response(body, headers={"Content-Type": content_type})


def _counted(service: Service, request: Request, error: APIError) -> Response:
    service.metrics.errors.labels(service.metrics.endpoint(request.url.path), error.type).inc()
    return error.response()


def create_app(model: ServedModel) -> Starlette:
    """The ASGI app serving ``model``; ``app.state.service`` is its :class:`Service`."""
    service = Service(model)

    async def on_api_error(request: Request, exc: APIError) -> Response:
        return _counted(service, request, exc)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        what = (f"no route {request.url.path}" if exc.status_code == 404 else
                f"method {request.method} is not allowed on {request.url.path}" if exc.status_code == 405 else
                str(exc.detail))
        return _counted(service, request, APIError(exc.status_code, what, headers=exc.headers))

    async def on_client_gone(request: Request, exc: ClientGone) -> Response:
        service.metrics.errors.labels(service.metrics.endpoint(request.url.path), "cancelled").inc()
        return Response(status_code=CLIENT_GONE)

    async def on_bug(request: Request, exc: Exception) -> Response:  # Starlette logs the traceback afterwards
        return _counted(service, request, server_error("internal error; see the server log"))

    @asynccontextmanager
    async def lifespan(app):
        yield
        await service.scheduler.drain()

    app = Starlette(
        routes=[Route("/v1/completions", completions, methods=["POST"]),
                Route("/v1/chat/completions", chat_completions, methods=["POST"]),
                Route("/v1/models", list_models, methods=["GET"]),
                Route("/v1/models/{model:path}", get_model, methods=["GET"]),
                Route("/health", health, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"])],
        exception_handlers={APIError: on_api_error, HTTPException: on_http_error, ClientGone: on_client_gone,
                            Exception: on_bug},
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(RequestCounter, metrics=service.metrics)
    return app
