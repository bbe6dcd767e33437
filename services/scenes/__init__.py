"""Scene analysis: split a video into shots with PySceneDetect and pick the longest."""
