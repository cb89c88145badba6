"""The gateway's routes, one module per concern; ``forkcast_gateway.app.create_app`` wires them.

recommend: ``POST /recommend/{user_id}`` (served as plain ASGI by the Edge, documented through FastAPI);
feedback: ``POST /feedback``; admin: ``/admin/*``; health: ``/healthz``, ``/readyz``, ``/metrics``.
"""
