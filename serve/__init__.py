"""Ray Serve application: the SearchAPI ingress over the shared search, its query encoder inside it or apart."""
