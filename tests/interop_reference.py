"""Run as a separate process: builds V2 requests with the reference client (tritonclient).

tritonclient registers its own `inference.*` protobuf messages in the process-wide descriptor pool,
as ours do, so the two cannot be imported into one interpreter; the tests talk to this script over
stdin/stdout in JSON instead.

Input: {"model", "version", "inputs": [{"name", "datatype", "shape", "values"}], "ours_grpc_hex"}.
Output: {"http_body": <JSON request body>, "grpc_hex": <serialized ModelInferRequest>,
         "ours_parsed": <our gRPC request parsed by tritonclient's message class, as a dict>}.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_,
         "BYTES": np.object_}


def main() -> None:
    spec = json.load(sys.stdin)
    http_inputs, grpc_inputs = [], []
    for tensor in spec["inputs"]:
        values = tensor["values"]
        if tensor["datatype"] == "BYTES":
            values = [v.encode("utf-8") for v in values]
        array = np.array(values, dtype=NUMPY[tensor["datatype"]]).reshape(tensor["shape"])
        http_input = thttp.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
        http_input.set_data_from_numpy(array, binary_data=False)
        http_inputs.append(http_input)
        grpc_input = tgrpc.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
        grpc_input.set_data_from_numpy(array)
        grpc_inputs.append(grpc_input)
    body, _ = thttp.InferenceServerClient.generate_request_body(http_inputs)
    request = _get_inference_request(model_name=spec["model"], inputs=grpc_inputs, model_version=spec["version"],
                                     request_id="", outputs=None, sequence_id=0, sequence_start=False,
                                     sequence_end=False, priority=0, timeout=None, parameters=None)
    ours = service_pb2.ModelInferRequest.FromString(bytes.fromhex(spec["ours_grpc_hex"]))
    json.dump({"http_body": json.loads(body), "grpc_hex": request.SerializeToString().hex(),
               "ours_parsed": MessageToDict(ours, preserving_proto_field_name=True)}, sys.stdout)


if __name__ == "__main__":
    main()
