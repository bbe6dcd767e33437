"""``python -m services.clips`` serves ClipEncoding."""

from services.clips.server import main

main()
