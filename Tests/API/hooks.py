"""Schemathesis hooks for resalloc's API check.

POST /machine makes the master open an SSH connection to the address it is given. Generated
addresses could name any host, and this check may reach only this machine's loopback, so every
address the server would accept is rewritten to 127.0.0.1:9 (nothing listens there: the master
answers 502, as documented). An address the server would refuse is left as it is; the master
rejects it with 400 before connecting, because it checks the same pattern the document states.

POST /lease with `Wait` waits in the fair queue for as long as it says when no machine has room
(the check's fleet is often full or empty): a valid `Wait` is shortened to 1s, so that the
request ends (503, as documented) within the check's read timeout. For the same reason
`GET /job/{id}/log` is asked without `follow`: followed, it stays open until the job ends, and a
generated job may wait in the queue for as long as the check runs.
"""

import os
import re

import schemathesis

UNREACHABLE = "127.0.0.1:9"
_ADDRESS = re.compile(os.environ["RESALLOC_ADDRESS_PATTERN"])


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if case.path == "/machine" and case.method.upper() == "POST" and isinstance(body, dict):
        address = body.get("IP")
        if isinstance(address, str) and _ADDRESS.search(address):
            body["IP"] = UNREACHABLE
    if case.path == "/lease" and case.method.upper() == "POST" and isinstance(body, dict):
        wait = body.get("Wait")
        if isinstance(wait, str) and re.fullmatch(r"[1-9][0-9]{0,5}[smhd]", wait):
            body["Wait"] = "1s"
    if case.path == "/job/{id}/log" and isinstance(case.query, dict) and "follow" in case.query:
        case.query["follow"] = "false"


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx, response):
    """POST /lease's streamed reply: each line is checked against the documented schema."""
    import json

    lines = [json.loads(line) for line in response.content.decode().splitlines() if line]
    if not lines or "Success" not in lines[-1]:
        raise ValueError("the stream did not end with a line carrying Success")
    return lines[-1]
