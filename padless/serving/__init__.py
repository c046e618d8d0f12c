"""The HTTP server behind ``padless serve``: a JSON API, a web chat page, dynamic batching.

- :mod:`padless.serving.batcher`: :class:`~padless.serving.batcher.DynamicBatcher`, which
  decodes requests that arrive close together as one batch on a worker thread;
- :mod:`padless.serving.app`: :func:`~padless.serving.app.create_app`, the FastAPI
  application (routes, limits, JSON errors) and the page in ``static/``;
- :mod:`padless.serving.server`: loading a run, binding, running uvicorn and draining on
  SIGTERM;
- :mod:`padless.serving.settings`: the limits (no web framework imported).

Nothing is imported here, so ``padless.serving.settings`` loads without FastAPI.
"""
