"""Praxedo, the field-service system: its web-service operations and the client that speaks them."""
