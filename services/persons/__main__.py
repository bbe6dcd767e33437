"""``python -m services.persons`` serves PersonDetection."""

from services.persons.server import main

main()
