"""An OpenAI-compatible HTTP server for any lmzoo model (`lmzoo serve`; needs the `serve` extra).

`engine` decodes every active request in one step per token over a `BatchDecoder` and admits
waiting requests between steps (continuous batching); `requests` validates request bodies;
`app` is the FastAPI application (the /v1 endpoints, /health, /metrics and the playground at /);
`metrics` holds its Prometheus counters; `runner` starts uvicorn on a socket.
"""
