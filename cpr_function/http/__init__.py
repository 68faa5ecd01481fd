"""The HTTP surface: routes, the app that answers them, and the documents it serves."""
