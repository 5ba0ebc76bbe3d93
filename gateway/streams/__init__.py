"""DynamoDB Streams invalidation: every change to a collection's table reaches the caches.

`gateway.streams.apply` decides what a change does to a cached copy; `gateway.streams.follower`
reads the streams (leases and checkpoints in `gateway.streams.coordination`);
`gateway.streams.lambda_handler` applies the records AWS Lambda hands it.
"""
