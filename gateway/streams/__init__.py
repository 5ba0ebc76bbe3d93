"""DynamoDB Streams invalidation: every change to a collection's table reaches the caches.

`gateway.streams.apply` decides what a change does to a cached copy; `gateway.streams.follower`
reads the streams (leases and checkpoints in `gateway.streams.coordination`);
`gateway.streams.lambda_handler` applies the records AWS Lambda hands it.
"""

from typing import Any


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry point (handler ``gateway.streams.lambda_handler``): apply a DynamoDB
    Streams event to the caches the environment's settings describe. See
    `gateway.streams.lambda_function`."""
    from gateway.streams.lambda_function import handle

    return handle(event, context)
