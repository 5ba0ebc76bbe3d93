"""A local DAX node: the DAX wire protocol in Python, in front of a DynamoDB endpoint.

The unmodified ``amazondax.AmazonDaxClient`` connects to it with ``dax://127.0.0.1:PORT``:
it finds this one node through endpoint discovery, authorizes each connection (SigV4 style),
learns key schemas and attribute lists, and sends GetItem, PutItem, UpdateItem, DeleteItem,
BatchGetItem, BatchWriteItem, Query, Scan, TransactGetItems and TransactWriteItems, whose
expressions (CBOR S-expressions) the emulator turns back into DynamoDB's and sends on with
boto3. DAX's item cache and query cache are emulated as AWS documents them (see
`gateway.dax_emulator.dataplane`). ``gateway dax-emulator`` runs one in the foreground.
"""

from gateway.dax_emulator.server import DaxEmulator, Faults

__all__ = ["DaxEmulator", "Faults"]
