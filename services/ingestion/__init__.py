"""Ingestion and the curation driver: sources in, clips, manifests and a report out."""
