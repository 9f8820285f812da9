"""What is synced, as data: entity specs and the TAMHR push's declaration."""
