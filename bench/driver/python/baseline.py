"""The cold-start benchmark's Python baseline: a custom-runtime loop doing
what a fleetkeeper function does at cold start and per event, in boto3.

At start: import boto3, build the same eight clients from the default chain
(region, credentials, AWS_ENDPOINT_URL). Then the Lambda Runtime API loop
(the same requests `lambda_runtime` makes): take an event, parse it, make
the call it names (`{"bench": {"call": "GetItem", "count": N, "table": T, "key": K}}`:
the N DynamoDB GetItems the function's lookup event makes), answer.
An event naming no call is answered without one (the skipped event).
"""

import http.client
import json
import os

import boto3

session = boto3.session.Session()
clients = {
    name: session.client(name)
    for name in ("ec2", "autoscaling", "elbv2", "efs", "ssm", "dynamodb", "s3", "sqs")
}

api = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
while True:
    api.request("GET", "/2018-06-01/runtime/invocation/next")
    reply = api.getresponse()
    request_id = reply.getheader("lambda-runtime-aws-request-id")
    event = json.loads(reply.read())
    call = event.get("bench", {}) if isinstance(event, dict) else {}
    answer = {"skipped": True}
    if call.get("call") == "GetItem":
        found = 0
        for _ in range(call.get("count", 1)):
            item = clients["dynamodb"].get_item(TableName=call["table"], Key=call["key"], ConsistentRead=True)
            found += "Item" in item
        answer = {"found": found}
    body = json.dumps(answer)
    api.request("POST", f"/2018-06-01/runtime/invocation/{request_id}/response", body=body)
    api.getresponse().read()
