"""`python -m conveyor.consumer`: run a consumer process."""

from conveyor.consumer.main import main

main()
