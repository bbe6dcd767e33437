"""``python -m services.scenes`` serves SceneAnalysis."""

from services.scenes.server import main

main()
