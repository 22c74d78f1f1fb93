"""stream-ae: streaming anomaly detection for Kafka event queues with PyTorch autoencoders."""

__version__ = "0.1.0"
