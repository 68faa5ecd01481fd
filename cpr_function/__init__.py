"""Serve AI Platform custom prediction routines, unchanged, as a Cloud Function."""
