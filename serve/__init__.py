"""Ray Serve application: a FastAPI search ingress, with the batched query encoder in it or as its own deployment."""
