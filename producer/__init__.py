"""The producer service: validates task submissions and publishes them with confirms."""

from producer.publisher import Publisher
from producer.service import ProducerService, open_submitter
from producer.submission import Submitter, TaskSubmission

__all__ = ["ProducerService", "Publisher", "Submitter", "TaskSubmission", "open_submitter"]
