"""Scene ingestion, patch preparation and the in-memory patch dataset."""
