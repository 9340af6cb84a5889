"""Ferry's Feast-enriching transformer."""
