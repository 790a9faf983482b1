"""`python -m consumer`: run a consumer process."""

from consumer.main import main

main()
