"""Hashtag planning, research-API collection and data retention (seed sections 3.2, 3.3, 8)."""
