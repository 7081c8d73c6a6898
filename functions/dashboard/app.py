"""DashboardFunction: the compliance page, metrics.json and the decryption-attempts log.

Invoked only by the dashboard's load balancer, after Cognito sign-in (template.yaml). The same resolver
serves the local stack's dashboard on 127.0.0.1 (`modelshield.local.dashboard_server`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from modelshield import wiring
from modelshield.dashboard.routes import build_app
from modelshield.dashboard.service import Dashboard
from modelshield.observability import logger


@lru_cache(maxsize=1)
def dashboard() -> Dashboard:
    return wiring.dashboard()


app = build_app(dashboard)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
