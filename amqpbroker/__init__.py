"""amqpbroker: an AMQP 0-9-1 message broker that existing RabbitMQ clients use unchanged."""

__version__ = "0.1.0"
