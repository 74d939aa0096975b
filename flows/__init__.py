"""One module per flow."""
