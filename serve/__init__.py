"""Ray Serve application: a FastAPI ingress running two-stage search, with the batched query encoder inside it or as its own deployment."""
