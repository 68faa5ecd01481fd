"""Serve AI Platform custom prediction routines, unchanged, as a Cloud Function.

`from cpr_function import predict` gives the Cloud Functions entry point (see `function`),
`from cpr_function import client` the client library (`remote/client.py`); importing the
package alone builds nothing, so `python -m cpr_function` stays light.
"""


def __getattr__(name: str):
    if name == "predict":
        from .function import predict

        return predict
    if name == "client":  # `from cpr_function import client`, as the docs write it
        from .remote import client

        return client
    raise AttributeError(f"module 'cpr_function' has no attribute {name!r}")
