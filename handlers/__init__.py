"""Action handlers, one module per kind, registered by the name rules use.

Every kind follows `protocol.Handler`: its parameter schema (the rule-file schema is assembled from
these), its planning (rule parameters and notification to exact calls, purely), and the endpoints
whose calls it sends. Adding a kind is one module here and its line below.
"""

from __future__ import annotations

from handlers import addon, context, explicit, metadata, moderation, tags
from handlers.protocol import Endpoint, Handler

REGISTRY: dict[str, Handler] = {
    handler.name: handler
    for handler in (
        explicit.HANDLER,
        addon.HANDLER,
        tags.HANDLER,
        context.HANDLER,
        metadata.HANDLER,
        moderation.HANDLER,
    )
}
ENDPOINTS: dict[str, Endpoint] = {
    endpoint.name: endpoint for handler in REGISTRY.values() for endpoint in handler.endpoints
}

__all__ = ["ENDPOINTS", "REGISTRY", "Endpoint", "Handler"]
