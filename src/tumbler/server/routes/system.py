"""/healthz and /metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

import tumbler
from tumbler import wire
from tumbler.server import metrics

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=wire.Health)
async def healthz(request: Request):
    """Liveness: answers without a token and says only that the server is up."""
    return wire.Health(ok=True, version=tumbler.__version__)


@router.get("/metrics", response_class=Response)
async def prometheus(request: Request):
    """Prometheus text format: sandboxes by state, request latency, errors by kind."""
    body = generate_latest(metrics.REGISTRY) + generate_latest(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
