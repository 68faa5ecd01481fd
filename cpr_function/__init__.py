"""Serve AI Platform custom prediction routines, unchanged, as a Cloud Function.

`from cpr_function import predict` gives the Cloud Functions entry point (see `function`);
importing the package alone builds nothing, so `python -m cpr_function` stays light.
"""


def __getattr__(name: str):
    if name == "predict":
        from .function import predict

        return predict
    raise AttributeError(f"module 'cpr_function' has no attribute {name!r}")
