"""The demo page (static files) and the media endpoint it shows items with."""
