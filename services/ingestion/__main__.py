"""``python -m services.ingestion`` serves Ingestion."""

from services.ingestion.server import main

main()
