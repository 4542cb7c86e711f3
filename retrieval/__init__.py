"""Domain logic of fashion search, importable and testable without Ray: models, images, catalogs, store, search."""
