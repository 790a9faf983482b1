"""The producer service: records task submissions and publishes them with confirms."""

from conveyor.producer.service import ProducerService, open_submitter
from conveyor.producer.submission.submitter import Submitter, TaskSubmission

__all__ = ["ProducerService", "Submitter", "TaskSubmission", "open_submitter"]
