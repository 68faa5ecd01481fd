"""Predicting with a model deployed elsewhere: forwarding, and the client library."""
