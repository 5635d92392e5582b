"""The Open Inference Protocol (KServe V2) REST API of the serving plane, binary tensors included.

``mapping`` (model names and versions → routes), ``datatypes`` (protocol datatypes, BYTES),
``infer_request`` (decoding and checking a request), ``infer_response`` (rendering an answer),
``compression`` (gzip / deflate bodies), ``metadata`` (server and model metadata), ``views``.
"""
