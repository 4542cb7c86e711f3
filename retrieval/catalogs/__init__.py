"""Catalog readers: each turns a dataset layout into CatalogItem records with image paths and payload metadata."""

from retrieval.catalogs.base import Catalog, CatalogError, open_catalog, safe_image_path

__all__ = ["Catalog", "CatalogError", "open_catalog", "safe_image_path"]
