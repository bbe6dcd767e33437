"""Person detection: YOLO on frames sampled inside a scene."""
