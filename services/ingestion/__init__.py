"""The Ingestion stage: sources in, raw videos and their metadata records out."""
