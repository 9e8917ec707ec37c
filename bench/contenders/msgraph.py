"""The Microsoft Graph SDK for Python: GraphServiceClient + msgraph-core's PageIterator, writing the
same gzip JSON Lines to a local temporary file and uploading it once at the end.

Runs in .venv-bench (msgraph-sdk is not one of the app's dependencies).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import tempfile
import time
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core.tasks.page_iterator import PageIterator

from .common import container, first_url


class StaticToken:
    """An async TokenCredential handing out the token the benchmark minted (sign-in is not compared)."""

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(os.environ["BENCH_GRAPH_TOKEN"], int(time.time()) + 3600)

    async def close(self) -> None:
        pass


async def export(out: gzip.GzipFile) -> int:
    endpoint = os.environ["GRAPH_ENDPOINT"]
    auth = AzureIdentityAuthenticationProvider(StaticToken(), scopes=[f"{endpoint}/.default"],
                                               allowed_hosts=[urlsplit(endpoint).hostname])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = f"{endpoint}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)
    query = parse_qs(urlsplit(first_url()).query)
    config = RequestConfiguration(query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        select=query["$select"][0].split(","), top=int(query["$top"][0])))
    first = await client.users.get(request_configuration=config)
    count = 0

    def write(user: object) -> bool:
        nonlocal count
        writer = JsonSerializationWriter()
        writer.write_object_value(None, user)
        out.write(writer.get_serialized_content() + b"\n")
        count += 1
        return True

    await PageIterator(first, adapter).iterate(write)
    return count


def main() -> None:
    with tempfile.TemporaryFile() as spool:
        with gzip.GzipFile(fileobj=spool, mode="wb") as out:
            users = asyncio.run(export(out))
        spool.seek(0)
        container().upload_blob("msgraph/users.jsonl.gz", spool, overwrite=True)
    print(json.dumps({"users": users}))


if __name__ == "__main__":
    main()
