"""Clip encoding: choose the 3.5-10 s segment of a scene and re-encode it to H.264."""
