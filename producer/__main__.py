"""`python -m producer`: run the producer service (HTTP API + publisher)."""

from producer.main import main

main()
