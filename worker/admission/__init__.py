"""Admission: fetched Kafka records become requests handed to their engine."""
