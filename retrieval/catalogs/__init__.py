"""Catalog readers: each turns a dataset layout into CatalogItem records with image paths and payload metadata."""

from retrieval.catalogs.base import Catalog, CatalogError, image_location, open_catalog, safe_image_path

__all__ = ["Catalog", "CatalogError", "image_location", "open_catalog", "safe_image_path"]
