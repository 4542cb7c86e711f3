"""Ray Serve application: a batched query-encoder deployment behind a FastAPI ingress that runs two-stage search."""
