"""`edge-quamba serve`: an OpenAI-compatible HTTP server over any backend (Starlette on uvicorn).

    server.py     serve(): open the model, build the backend, bind the socket, run uvicorn, stop on SIGTERM
    app.py        the routes: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics
    schemas.py    request bodies (pydantic) -> one GenerationRequest; unsupported OpenAI fields refused
    responses.py  OpenAI response objects and the server-sent-event chunks of a stream
    engine.py     one request's generation in the worker thread (runtime.generate, stop sequences, deadline)
    scheduler.py  one active sequence, a bounded FIFO queue, cancellation
    stops.py      stop sequences cut out of streamed text
    chat.py       chat messages -> prompt text (the model's chat template, or the plain one)
    errors.py     OpenAI-style error objects
    metrics.py    Prometheus counters, gauges and histograms

Sequences and batching: a Mamba state belongs to one sequence and every backend generates batch 1, so the server
runs ONE generation at a time per process, in arrival order; others wait in a bounded FIFO queue and the request
that finds it full gets 429 with Retry-After. There is no batching yet: N concurrent clients share one sequence's
decode speed (throughput does not grow with N; latency grows with the queue). Batching several sequences needs
batch-N states threaded through decode and is for a later change, where a backend supports it.
"""
