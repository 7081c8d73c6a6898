"""ApiFunction: the ModelShield HTTP API behind API Gateway with IAM authorization.

One resolver; each area is a router module in `modelshield.api` (`*_routes.py`), included here. Request
bodies and query strings are validated by pydantic (enable_validation); domain exceptions become HTTP
statuses in one place (`modelshield.api.register_error_handlers`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.typing import LambdaContext
from modelshield.api import access_routes, audit_routes, jobs_routes, register_error_handlers, scan_routes
from modelshield.observability import logger, tracer

app = APIGatewayRestResolver(enable_validation=True)
for routes in (access_routes, audit_routes, scan_routes, jobs_routes):
    app.include_router(routes.router)
register_error_handlers(app)


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
