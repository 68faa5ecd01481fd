"""Cloud Functions entry point: `functions-framework --target predict`.

The entry point is this one line; the code is the `cpr_function` package (its
`function` module builds the app).
"""

from cpr_function import predict  # noqa: F401
