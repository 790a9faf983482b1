"""`python -m conveyor.producer`: run the producer service (HTTP API + publisher)."""

from conveyor.producer.main import main

main()
