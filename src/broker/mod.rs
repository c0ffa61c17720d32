//! Kafka and AMQP publishers and consumers, and the standard output sink.
