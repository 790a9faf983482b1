"""`python -m consumer`: run a consumer process."""

from conveyor.consumer.main import main

main()
